"""Running it all: loading the config, one module per stage (`steps/`), the chain without DVC, stage CLIs, sweeps."""
