"""The exit codes of every command, as the README documents them."""

EXIT_OK = 0
EXIT_DAEMON_DOWN = 1  # the daemon is not running; also a refused request, a job error
EXIT_CONFIG = 2  # bad config or usage
EXIT_NOT_RUNNING = 3  # some service is not running
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT
