"""The batched generation engine shared by the inference server and the evaluator.

  request        GenRequest (one row's state), its Sink protocol, GenerationError
  target         DecodeTarget: what the loop needs to know about a model (EOS, pad, cache kind)
  text_stream    token ids -> text pieces, cut at stop strings
  kv_batch       the running batch's shared, left-padded KV cache: merge rows in, compact rows out
  sampling       next-token choice per row (processors, penalties, greedy / top-p)
  decoder        the continuous-batching steps: prefill into a running batch, decode, deliver
  batch_generate generate_batch: a synchronous loop over a list of prompts (the evaluator's)
  reference      one prompt at a time through ``model.generate`` (tests and benchmarks)

Importing the package imports neither torch nor transformers.
"""
