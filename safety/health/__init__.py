"""The comprehensive health check: processes, status files, queue, inference, resources, config, model."""
