"""`msgsync bench`: the issue-6 workloads, driven over real HTTP and verified as they run."""
