import sys

from .environment import _main

if __name__ == "__main__":
    raise SystemExit(_main(sys.argv))
