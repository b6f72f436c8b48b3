"""The doctor: facts built from a snapshot, the checks over them, the plan and the status report."""
