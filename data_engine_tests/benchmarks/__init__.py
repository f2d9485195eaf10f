"""Performance benchmarks: each compares the product's code path with a baseline in the same run.

Run them on their own (see README.md); they are not part of the test command and never assert timings.
"""
