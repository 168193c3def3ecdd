"""Local stand-ins of the GPU clouds' HTTP APIs (RunPod, Vast.ai, Kaggle), for tests only.

Each one is a real HTTP server on 127.0.0.1 that speaks the wire format the official SDK sends and,
when asked for a pod / instance / kernel, starts the worker as a local process with exactly the
environment that machine would get. They record every launch and termination (so a test can prove
no machine is left billing) and can simulate no capacity, preemption and a failed bootstrap.
"""
