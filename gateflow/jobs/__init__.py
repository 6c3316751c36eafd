"""Layer *jobs*: decay, report and sweep, orchestration only (spec, measure, analyse,
figures, write)."""
