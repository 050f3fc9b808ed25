"""Book machinery: the notebook runner, the command line, the scoreboard and the teaching helpers."""
