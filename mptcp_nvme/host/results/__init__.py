"""The run's outputs: KTAP, JUnit, results.json, KCIDB, summaries, merged shards, fault reports."""
