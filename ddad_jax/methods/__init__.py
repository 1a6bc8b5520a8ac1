"""Data-free distillation methods: what each one's generator and student steps compute."""
