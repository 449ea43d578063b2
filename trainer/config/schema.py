"""Typed configuration. Every field has a docstring (the string right below it), read by
``trainctl config show --explain``. Constraints live in field metadata (``choices``, ``min``,
``max``) and are checked by ``trainer.config.loader`` with messages that name the dotted key.

Precedence: defaults < config.json < environment (``TRAINER__SECTION__KEY=value``) < CLI flags.
The folder layout is fixed by the design card under one base dir (``--base-dir`` /
``$TRAINER_BASE_DIR``); config paths that are relative are taken from that base dir.

Secrets: a field declared with ``secret=True`` (the API keys) is never echoed: ``trainctl config
show``, ``config edit`` and its backups, and the registry's ``runs.config_json`` show ``"***"``
(``trainer.config.keys.redact_config``; ``foundation.secrets`` holds the rule). A backup therefore
does not restore keys: set them again, or keep them out of config.json altogether, in
``$INFERENCE_API_KEY`` / ``$INFERENCE_ADMIN_KEY`` or in a key file named by ``inference.api_key_file``
/ ``inference.admin_api_key_file`` that only its owner can read (chmod 600; a file readable by
group/others is refused, as ssh does). Precedence per key: environment > key file > inline value;
setting both the inline value and the file is an error.
"""
from __future__ import annotations

from dataclasses import dataclass

from trainer.config.fields import f
from trainer.config.schema_ops import AutonomyConfig, DiskConfig, RetentionConfig, WatchdogConfig


# Keys that change what "the model" is: edit_config refuses them without --force.
PROTECTED_KEYS = ("model.model_name", "model.base_model", "data.max_length")


@dataclass
class ModelConfig:
    model_path: str = f("models/tiny-qwen3")
    """Local Hugging Face model directory to start from when models/current_model/ is empty
    (relative paths are from the base dir). Any causal LM folder works, e.g. a Qwen3-0.6B download."""
    model_name: str = f("tiny-qwen3")
    """Display name of the model lineage; protected (changing it starts a different lineage)."""
    base_model: str = f("models/tiny-qwen3")
    """The base model the lineage started from; protected."""
    trust_remote_code: bool = f(False)
    """Allow custom modelling code from the model folder (off: only built-in architectures)."""


@dataclass
class LoraConfig:
    r: int = f(16, min=1, max=1024)
    """LoRA rank."""
    alpha: int = f(32, min=1)
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: float = f(0.05, min=0.0, max=0.9)
    """Dropout on the LoRA branch."""
    target_modules: list = f(factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    """Module names that get adapters."""


@dataclass
class TrainingConfig:
    method: str = f("full", choices=["full", "lora"])
    """full fine-tuning, or LoRA adapters (merged into full weights on export)."""
    learning_rate: float = f(2e-4, min=0.0, max=1.0, exclusive_min=True)
    """Peak learning rate."""
    lr_scheduler: str = f("constant_with_warmup", choices=["constant_with_warmup", "cosine", "linear", "constant"])
    """Schedule. Continuous training uses constant_with_warmup by default: warm-up happens once per
    lineage (global steps), never again per file. cosine/linear decay over each file's steps."""
    warmup_steps: int = f(10, min=0)
    """Warm-up steps, counted on the global step (not restarted per file)."""
    per_device_batch_size: int = f(8, min=1, max=4096)
    """Examples per device per micro-batch."""
    gradient_accumulation_steps: int = f(1, min=1, max=4096)
    """Micro-batches per optimizer step."""
    num_epochs: float = f(1.0, min=0.0, exclusive_min=True)
    """Passes over each file (ignored when max_steps > 0)."""
    max_steps: int = f(-1, min=-1)
    """Optimizer steps per file; -1 means from num_epochs."""
    weight_decay: float = f(0.0, min=0.0)
    """AdamW weight decay."""
    max_grad_norm: float = f(1.0, min=0.0)
    """Gradient clipping norm (0 disables)."""
    logging_steps: int = f(5, min=1)
    """Steps between log lines and status-file updates."""
    eval_steps: int = f(50, min=0)
    """Steps between validation-set evaluations (0: only at the end of a file)."""
    save_steps: int = f(50, min=1)
    """Steps between checkpoints (a checkpoint is also written at the end of each file)."""
    save_total_limit: int = f(5, min=1)
    """Checkpoints kept per job folder (older ones are pruned)."""
    seed: int = f(42)
    """Random seed (data order, dropout, initialisation of LoRA)."""
    precision: str = f("auto", choices=["auto", "fp32", "bf16", "fp16"])
    """Training precision. auto = bf16 on CUDA that supports it; on a CPU with native bf16
    (avx512_bf16/amx_bf16) bf16 mixed precision (fp32 weights, bf16 autocast); else fp32.
    fp16 trains with a loss scaler (master weights fp32)."""
    gradient_checkpointing: bool = f(False)
    """Trade compute for memory."""
    torch_compile: bool = f(False)
    """Compile the model with torch.compile: pays on CUDA for long jobs; on CPU the compile time
    exceeds a file's worth of small-model steps."""
    prune_last_layer: bool = f(True)
    """Run the last decoder layer at label positions only (same loss and gradients, fewer
    multiplies: about 11% of a 4-layer model's layer compute with assistant-only loss). Llama-shaped
    models with sdpa/eager attention; checked against the model's own logits on the first batch and
    switched off by itself if they differ. false: always the model's own last layer."""
    cpu_attention: str = f("auto", choices=["auto", "math_bf16", "flash_fp32", "flash_bf16"])
    """How attention runs under bf16 mixed precision on a CPU (no effect on CUDA or in fp32); all
    three keep bf16 mixed precision. math_bf16: bf16 matrix multiplies with the softmax in fp32
    (transformers' eager arithmetic; fastest at chat lengths, it holds the queries x keys scores).
    flash_fp32: the flash kernel on inputs cast up to fp32 (its bf16 backward is slow on CPUs).
    flash_bf16: the flash kernel in bf16, as autocast does by itself. auto: math_bf16 while one
    layer's scores fit in 32 MiB (8 rows x 4 heads up to about 720 tokens), flash_bf16 beyond
    (bench/cpu_attention.py)."""
    shape_buckets: str = f("auto", choices=["auto", "on", "off"])
    """Round each step's shapes up to a few buckets (batch length to 16 tokens, logit rows to 64,
    pruned-layer queries to 8; same loss and gradients). On a CPU, bf16 matrix multiplies build a
    kernel for every new shape, and length-grouped batches make every step's shapes new
    (bench/shape_buckets.py). auto: on for bf16 on a CPU, off elsewhere."""
    logits_budget_mb: int = f(256, min=0)
    """Largest fp32 logits tensor (label tokens x vocabulary) a step builds whole; above it the LM
    head and the loss run in blocks of this size (same loss and gradients; Llama-shaped models with
    a plain head). 0: always whole. Qwen3's 151,936-entry vocabulary at 8 x 1,024 label tokens would
    otherwise be 5 GB of logits plus as much for their gradient."""
    retain_freed_memory: bool = f(True)
    """Keep freed memory in the training process (glibc malloc: blocks up to 32 MB from the heap,
    heap never trimmed) so each step does not page-fault its activations in again; the peak is
    unchanged. false: glibc's defaults."""
    group_by_length: bool = f(True)
    """Length-grouped batches (little padding on skewed data)."""
    num_processes: int = f(1, min=1, max=1024)
    """Training processes; > 1 launches the trainer child with accelerate launch (DDP)."""
    accelerate_config: str = f("")
    """Optional accelerate config file (FSDP / DeepSpeed / multi-node) for num_processes > 1."""
    num_machines: int = f(1, min=1, max=1024)
    """Machines in one training launch (each runs num_processes ranks). > 1: the machine with
    machine_rank 0 runs the daemon (intake, checkpoints, deployment); every other machine runs
    ``trainctl worker`` and joins each job's launch. Job folders, models and data must be at the same
    paths on every machine (shared storage); see ARCHITECTURE.md, "Beyond one machine"."""
    machine_rank: int = f(0, min=0, max=1023)
    """This machine's rank in a multi-machine launch: 0 where the daemon runs, 1.. on workers."""
    main_process_ip: str = f("127.0.0.1")
    """Address of the machine_rank-0 machine, as every machine reaches it: the torch.distributed
    rendezvous and the job endpoint that workers poll."""
    main_process_port: int = f(29500, min=1, max=65535)
    """torch.distributed rendezvous port on the machine_rank-0 machine."""
    job_server_port: int = f(29499, min=1, max=65535)
    """Port of the rank-0 job endpoint (GET /job) that workers poll; served on main_process_ip
    while a multi-machine job runs. Set $TRAINER_CLUSTER_TOKEN on every machine to require it
    (mandatory when main_process_ip is not a loopback address)."""
    device: str = f("auto", choices=["auto", "cpu", "cuda"])
    """Where to train: auto = CUDA when available."""
    dataloader_num_workers: int = f(0, min=0, max=64)
    """DataLoader worker processes."""
    lora: LoraConfig = f(factory=LoraConfig)
    """LoRA options (training.method = "lora")."""


@dataclass
class DataConfig:
    max_length: int = f(512, min=16, max=1_048_576)
    """Maximum tokens per example (protected)."""
    overlong_policy: str = f("truncate", choices=["truncate", "drop", "fail"])
    """What to do with an example longer than max_length: truncate it, drop it, or fail the file."""
    loss_on: str = f("assistant", choices=["assistant", "last_assistant", "all"])
    """Which tokens get a loss: every assistant turn, the last assistant turn only, or all tokens."""
    drop_duplicates: bool = f(True)
    """Exact duplicate examples are reported and trained once."""
    max_line_bytes: int = f(10_000_000, min=1024)
    """A line longer than this is rejected without being parsed."""
    validation_dir: str = f("data/validation")
    """Fixed validation suite (*.jsonl), never trained on."""
    max_eval_examples: int = f(256, min=1)
    """Validation examples used for validation_loss during training."""


@dataclass
class ProfileConfig:
    name: str = f("plain")
    """Data profile (trainer/profiles/): plain, emoji_think, regime3."""
    system_prompt: str = f("")
    """System prompt template ({date} is replaced); empty uses the profile's default."""
    options: dict = f(factory=dict)
    """Profile-specific options (see the profile's docstring)."""


@dataclass
class DaemonConfig:
    use_polling_observer: bool = f(False)
    """Watch inbox/ by polling instead of inotify."""
    poll_interval: float = f(1.0, min=0.05, max=3600)
    """Seconds between polls (polling observer and queue rescans)."""
    file_stable_seconds: float = f(0.5, min=0.0, max=3600)
    """A file whose size has not changed for this long counts as complete (when no close-after-write is seen)."""
    heartbeat_interval: float = f(2.0, min=0.1, max=3600)
    """Seconds between status heartbeats."""
    oom_max_retries: int = f(2, min=0, max=10)
    """Out-of-memory retries per job (each halves the per-device batch, doubles accumulation)."""
    keep_warm_child: bool = f(True)
    """Keep a trainer child with torch/transformers imported, waiting for the next job."""
    stop_timeout: float = f(300.0, min=1.0, max=86400)
    """Seconds a stop (SIGTERM or control/.stop) waits for the checkpoint at the next step
    boundary before the trainer child is killed (the job then resumes from its previous checkpoint)."""
    stall_timeout: float = f(1800.0, min=0.0, max=604800)
    """A job with no optimizer step for this long (not paused) is killed and reported as a hang;
    0 disables. Must exceed the slowest step plus model load and evaluation time."""
    hang_retries: int = f(1, min=0, max=100)
    """A job killed as a hang resumes from its last checkpoint this many times before it is
    quarantined with reason "hang" (a transient stall resumes; a file that hangs again fails)."""
    max_job_restarts: int = f(3, min=0, max=1000)
    """Times a job whose trainer process died (killed, segfault) is resumed from its last
    checkpoint before the file is quarantined."""
    child_max_jobs: int = f(16, min=1, max=100000)
    """Jobs one warm trainer child runs before a fresh process replaces it (1: a new process per
    job). A child whose job failed is always replaced (clean CUDA context for an OOM retry)."""
    log_keep_days: int = f(14, min=1, max=3650)
    """Daily log files kept in logs/ (training_daemon.log.*, trainer_child.log.*)."""


@dataclass
class MonitoringConfig:
    status_interval: float = f(2.0, min=0.1)
    """Seconds between status writes of the sidecar daemons."""
    live_monitor_host: str = f("127.0.0.1")
    """Bind address of the live dashboard."""
    live_monitor_port: int = f(8780, min=1, max=65535)
    """Port of the live dashboard."""
    live_monitor_history_points: int = f(2000, min=10, max=100_000)
    """Most per-step points the dashboard serves (a longer history is downsampled to this many)."""
    metrics_log_max_mb: float = f(20.0, min=0.01)
    """logs/metrics.jsonl (one JSON line per logged training step) rotates past this size (MiB)."""
    metrics_log_backups: int = f(3, min=0, max=100)
    """Rotated metrics logs kept (metrics.jsonl.1 = newest ... .N = oldest)."""


@dataclass
class InferenceConfig:
    host: str = f("127.0.0.1")
    """Bind address; a non-loopback address requires API keys."""
    port: int = f(8765, min=1, max=65535)
    """Port."""
    api_key: str = f("", secret=True)
    """Read key (Bearer) for the API; empty: none required ($INFERENCE_API_KEY overrides). Secret:
    never shown; prefer api_key_file or the environment to keeping it in config.json."""
    api_key_file: str = f("")
    """File holding the read key (relative paths are from the base dir); must be readable only by
    its owner (chmod 600). Used instead of api_key; $INFERENCE_API_KEY overrides it."""
    admin_api_key: str = f("", secret=True)
    """Admin key for /models/reload ($INFERENCE_ADMIN_KEY overrides). Secret: never shown. The read
    key never acts as the admin key: with no admin key, admin endpoints are open only on a
    loopback server that has no read key either."""
    admin_api_key_file: str = f("")
    """File holding the admin key (relative paths are from the base dir); must be readable only by
    its owner (chmod 600). Used instead of admin_api_key; $INFERENCE_ADMIN_KEY overrides it."""
    device: str = f("auto", choices=["auto", "cpu", "cuda"])
    """Device for serving."""
    precision: str = f("auto", choices=["auto", "fp32", "bf16", "fp16"])
    """Numeric precision of the served weights, and of the local evaluator's (so that it scores
    the model as served). auto = bf16 on CUDA that supports it and on a CPU with native bf16
    (avx512_bf16/amx_bf16), else fp32; checkpoints stay fp32 either way. fp16 needs CUDA."""
    max_batch_size: int = f(64, min=1, max=1024)
    """Most requests decoded together."""
    max_queue: int = f(256, min=1)
    """Waiting requests beyond which the server answers 429."""
    default_max_tokens: int = f(128, min=1)
    """max_tokens when a request gives none."""
    model_dir: str = f("models/deployed")
    """Where deployed versions live; reload only accepts versions under models/."""
    batch_wait_ms: float = f(10.0, min=0.0, max=10_000)
    """Longest a waiting request is held back so that it can be prefilled together with others
    (it joins at once when enough requests wait to fill the free batch slots)."""
    serve_base_model_when_empty: bool = f(True)
    """When nothing is deployed yet (no models/deployed/current), serve model.model_path as version "base"."""
    num_threads: int = f(0, min=0, max=1024)
    """Torch CPU threads of the server; 0: torch's default (honours $OMP_NUM_THREADS). On a busy
    shared CPU, 1 is often much faster than several threads competing for the cores."""
    upload_max_bytes: int = f(64 * 2**30, min=1)
    """Largest model version (all its files together, bytes) the server accepts over
    PUT /models/upload/... (deployment.transport "http"); bigger uploads get 413."""
    upload_stale_seconds: float = f(86400.0, min=1.0)
    """An unfinished upload under models/deployed/.incoming/ that received nothing for this many
    seconds is discarded (until then the orchestrator can continue it where it stopped)."""


@dataclass
class EvaluationConfig:
    interval: float = f(10.0, min=0.1)
    """Seconds between scans for new checkpoints."""
    mode: str = f("local", choices=["local", "server"])
    """Run the suite in-process (local) or through the inference server."""
    device: str = f("cpu", choices=["auto", "cpu", "cuda"])
    """Device for local evaluation (in the precision ``inference.precision`` gives, as served)."""
    max_new_tokens: int = f(64, min=1)
    """Greedy decoding budget per suite item."""
    max_items: int = f(200, min=1)
    """Suite items evaluated per checkpoint."""
    weight_loss: float = f(0.4, min=0.0)
    """Composite score weight of (normalised) validation loss."""
    weight_accuracy: float = f(0.5, min=0.0)
    """Composite score weight of accuracy."""
    weight_calibration: float = f(0.1, min=0.0)
    """Composite score weight of (1 - ECE)."""
    regression_loss_ratio: float = f(1.15, min=1.0)
    """Flag a checkpoint whose validation loss is above best * this."""
    regression_accuracy_drop: float = f(0.10, min=0.0, max=1.0)
    """Flag a checkpoint whose accuracy is below best minus this."""
    batch_size: int = f(32, min=1, max=4096)
    """Suite items generated together (local mode)."""
    server_url: str = f("")
    """Inference server base URL for mode "server"; empty: http://<inference.host>:<inference.port>."""
    num_threads: int = f(0, min=0, max=1024)
    """Torch CPU threads of the evaluation daemon (local mode); 0: torch's default (one per core).
    Where training shares the CPU, 1 keeps the two from oversubscribing the cores."""
    nice: int = f(0, min=0, max=19)
    """Raise the evaluation daemon's Unix niceness by this much at start: under contention training
    keeps the CPU and evaluation takes what is left (0: same priority as training)."""


@dataclass
class DeploymentConfig:
    interval: float = f(30.0, min=0.1)
    """Seconds between deployment checks (also triggered by status/model_comparisons.json changing)."""
    strategy: str = f("best_ranked", choices=["best_ranked", "newest"])
    """best_ranked: top of model_comparisons.json; newest: newest complete checkpoint."""
    smoke_prompt: str = f("Say hello.")
    """Prompt of the post-deploy smoke completion."""
    keep_versions: int = f(5, min=1)
    """Deployed versions kept under models/deployed/."""
    poll_interval: float = f(0.5, min=0.05, max=3600)
    """Seconds between checks of status/model_comparisons.json and the checkpoint folders for changes
    (a change triggers a deployment check at once, without waiting for interval)."""
    server_url: str = f("")
    """Inference server to deploy to; empty: http://<inference.host>:<inference.port>."""
    smoke_max_tokens: int = f(8, min=1, max=4096)
    """max_tokens of the post-deploy smoke completion."""
    request_timeout: float = f(120.0, min=1.0)
    """Seconds the orchestrator waits for a reload or the smoke completion."""
    transport: str = f("local", choices=["local", "http"])
    """How a version reaches the server. local: copied into this base dir's inference.model_dir,
    which the server reads (same machine or a shared file system). http: also pushed to the server
    at server_url over its admin upload endpoints (streamed, sha256-verified, resumed after an
    interruption), for a server on another machine; needs the admin key on both sides."""
    upload_attempts: int = f(3, min=1, max=100)
    """With transport "http": tries per deployment to finish an upload (each try continues where
    the last one stopped) before the deployment counts as failed."""


@dataclass
class Config:
    model: ModelConfig = f(factory=ModelConfig)
    """Which model to train."""
    training: TrainingConfig = f(factory=TrainingConfig)
    """Hyperparameters and precision."""
    data: DataConfig = f(factory=DataConfig)
    """Data loading, validation and masking."""
    profile: ProfileConfig = f(factory=ProfileConfig)
    """Data profile."""
    daemon: DaemonConfig = f(factory=DaemonConfig)
    """Training daemon."""
    monitoring: MonitoringConfig = f(factory=MonitoringConfig)
    """Status and dashboard."""
    inference: InferenceConfig = f(factory=InferenceConfig)
    """Inference server."""
    evaluation: EvaluationConfig = f(factory=EvaluationConfig)
    """Automated tests, comparison, regression."""
    deployment: DeploymentConfig = f(factory=DeploymentConfig)
    """Deployment orchestrator."""
    autonomy: AutonomyConfig = f(factory=AutonomyConfig)
    """Autonomous sidecars: data generation, curriculum, adversarial mining, self-correction."""
    watchdog: WatchdogConfig = f(factory=WatchdogConfig)
    """Watchdog restart policy, heartbeat timeouts, hang and crash detection."""
    retention: RetentionConfig = f(factory=RetentionConfig)
    """Checkpoint retention, backups and snapshots (management/)."""
    disk: DiskConfig = f(factory=DiskConfig)
    """Disk manager: cleaning and the disk_low pause."""
