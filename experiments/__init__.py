"""Studies built on ltpnet; run from the repository root as
`python -m experiments.NAME`."""
