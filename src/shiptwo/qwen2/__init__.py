"""The Qwen2 subject: config, model, checkpoints (HF, APR, GGUF), trainer, CLI, distributed, parity.

`from shiptwo.qwen2.checkpoint import from_pretrained` loads a model; `shiptwo.from_pretrained`
is the same function, resolved lazily so the harness never pays for torch.
"""
