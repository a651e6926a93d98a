"""The trivial service every supervisor in the benchmark runs: sleep forever.

The first argument is a marker unique to one benchmark run; the harness finds these
processes by it. The script ignores it and does nothing but sleep, so any difference
between supervisors comes from the supervisors themselves.
"""

import time

if __name__ == "__main__":
    while True:
        time.sleep(3600)
