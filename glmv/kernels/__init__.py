"""GPU kernels (Triton) that replace eager model code behind plain Python entry points. Importing this package
never imports triton: each entry point says whether it can run (`available`) and imports its kernels on first use.
"""
