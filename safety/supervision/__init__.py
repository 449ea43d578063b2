"""Process supervision: the watchdog's state machine, program table, process handling, loop and CLI."""
