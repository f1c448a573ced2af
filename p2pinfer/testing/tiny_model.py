"""Write a tiny llama-architecture GGUF model with random weights, for tests and testnets.

2 layers, dimension 64, a byte-level vocabulary of 259 tokens: about 470 KB,
loads in llama.cpp in milliseconds and generates thousands of tokens a second.
Its text is gibberish but deterministic: the same seed writes the same file,
and greedy decoding gives the same tokens on every run of one engine build.
Needs the `gguf` and `numpy` packages (development extras).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TINY_MODEL_NAME = "tiny:latest"

# A ChatML template, so chat() works on the tiny model as on SmolLM2.
_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# Over 60 lines by design: one GGUF file written in order (keys, then tensors, layer by
# layer); split, the order would be harder to check against llama.cpp's loader.
def write_tiny_model(
    path: Path,
    *,
    seed: int = 0,
    dim: int = 64,
    n_layers: int = 2,
    n_heads: int = 4,
    ff_dim: int = 128,
    context_length: int = 2048,
) -> Path:
    """Write the model to `path` (atomically) and return `path`; same arguments, same bytes."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)

    def weights(*shape: int) -> Any:
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    tokens = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{i:02X}>".encode() for i in range(256)]
    # llama.cpp token types: 2 unknown, 3 control, 6 byte.
    token_types = [2, 3, 3] + [6] * 256
    vocab = len(tokens)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    writer.add_name("p2pinfer tiny test model")
    writer.add_context_length(context_length)
    writer.add_embedding_length(dim)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(ff_dim)
    writer.add_head_count(n_heads)
    writer.add_head_count_kv(n_heads)
    writer.add_rope_dimension_count(dim // n_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(0)  # all F32
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * vocab)
    writer.add_token_types(token_types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_chat_template(_CHAT_TEMPLATE)

    writer.add_tensor("token_embd.weight", weights(vocab, dim))
    for layer in range(n_layers):
        prefix = f"blk.{layer}"
        writer.add_tensor(f"{prefix}.attn_norm.weight", np.ones(dim, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{prefix}.{name}.weight", weights(dim, dim))
        writer.add_tensor(f"{prefix}.ffn_norm.weight", np.ones(dim, dtype=np.float32))
        writer.add_tensor(f"{prefix}.ffn_gate.weight", weights(ff_dim, dim))
        writer.add_tensor(f"{prefix}.ffn_up.weight", weights(ff_dim, dim))
        writer.add_tensor(f"{prefix}.ffn_down.weight", weights(dim, ff_dim))
    writer.add_tensor("output_norm.weight", np.ones(dim, dtype=np.float32))
    writer.add_tensor("output.weight", weights(vocab, dim))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)
    return path
