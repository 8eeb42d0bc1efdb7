"""`python -m rollout`: the controller (`run`) and its CLI for people."""

from rollout.cli import main

if __name__ == "__main__":
    main()
