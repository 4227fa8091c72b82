"""The plan (variants, jobs, paths) composed into params.yaml, and what each DVC stage depends on."""
