peak = 207.12
max_threads = 2
