"""Run infrastructure above the methods: how runs are driven (lockstep groups)."""
