"""The demo checkpoint (issue #3): procedural figures (`figures`), training (`train`), config (`config`)."""
