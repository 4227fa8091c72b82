"""Running it all: loading the config, one function per stage (`steps`), the chain without DVC, stage CLIs, sweeps."""
