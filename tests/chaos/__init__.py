"""The chaos suite (issue 9): real web and worker processes, simulators that misbehave, invariants checked after."""
