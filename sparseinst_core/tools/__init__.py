"""Commands on top of the library (benchmarks, demo, export); nothing imports them."""
