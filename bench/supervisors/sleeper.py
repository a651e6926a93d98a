"""The trivial service every supervisor in the benchmark runs: sleep forever.

The first argument is a marker unique to one benchmark run; the harness finds these
processes by it. The script ignores it and does nothing but sleep, so any difference
between supervisors comes from the supervisors themselves. With `--port P` it also
listens on 127.0.0.1:P and accepts (and closes) connections, so a TCP health check of
that port passes (bench/supervisors/cli.py's idle stacks).
"""

import socket
import sys
import time

if __name__ == "__main__":
    if "--port" in sys.argv:
        port = int(sys.argv[sys.argv.index("--port") + 1])
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen(16)
        while True:
            conn, _ = server.accept()
            conn.close()
    while True:
        time.sleep(3600)
