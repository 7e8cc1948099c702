#!/usr/bin/env python3
"""Write a tiny random-weight llama GGUF model (~0.5 MB) that llama.cpp's server loads.

    scripts/make-tiny-model.py OUT.gguf

For the developer sandbox, the tests and the offline test image: it lets a real engine
answer real requests in milliseconds without downloading anything. Its text is gibberish;
use it to test protocols, not words. The output is the same for every run (fixed seed).
Needs the `gguf` and `numpy` packages (requirements-dev.txt).
"""

import sys
from pathlib import Path

import gguf
import numpy as np

EMBED = 64
FEED_FORWARD = 128
HEADS = 4
BLOCKS = 2
CONTEXT = 2048
WORDS = [
    "the",
    "a",
    "an",
    "is",
    "of",
    "to",
    "and",
    "in",
    "it",
    "you",
    "I",
    "Echo",
    "hello",
    "world",
    "cube",
    "agent",
    "model",
    "test",
]
# ChatML: llama.cpp's server recognises it and formats /v1/chat/completions with it.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def vocabulary():
    """An SPM vocabulary: control tokens, the 256 byte-fallback tokens, a few word pieces."""
    tokens = [("<unk>", gguf.TokenType.UNKNOWN), ("<s>", gguf.TokenType.CONTROL)]
    tokens.append(("</s>", gguf.TokenType.CONTROL))
    tokens += [(f"<0x{b:02X}>", gguf.TokenType.BYTE) for b in range(256)]
    pieces = ["\u2581", *"abcdefghijklmnopqrstuvwxyz", *("\u2581" + w for w in WORDS)]
    tokens += [(p, gguf.TokenType.NORMAL) for p in pieces]
    return tokens


def write(path):
    rng = np.random.default_rng(0)

    def weights(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    tokens = vocabulary()
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("cube-tiny-test-model")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(EMBED)
    writer.add_feed_forward_length(FEED_FORWARD)
    writer.add_block_count(BLOCKS)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS)
    writer.add_rope_dimension_count(EMBED // HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list([t.encode() for t, _ in tokens])
    writer.add_token_scores([-float(i) for i in range(len(tokens))])
    writer.add_token_types([kind for _, kind in tokens])
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_chat_template(CHAT_TEMPLATE)

    writer.add_tensor("token_embd.weight", weights(len(tokens), EMBED))
    writer.add_tensor("output_norm.weight", np.ones(EMBED, dtype=np.float32))
    writer.add_tensor("output.weight", weights(len(tokens), EMBED))
    for i in range(BLOCKS):
        block = f"blk.{i}"
        writer.add_tensor(f"{block}.attn_norm.weight", np.ones(EMBED, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{block}.{name}.weight", weights(EMBED, EMBED))
        writer.add_tensor(f"{block}.ffn_norm.weight", np.ones(EMBED, dtype=np.float32))
        writer.add_tensor(f"{block}.ffn_gate.weight", weights(FEED_FORWARD, EMBED))
        writer.add_tensor(f"{block}.ffn_up.weight", weights(FEED_FORWARD, EMBED))
        writer.add_tensor(f"{block}.ffn_down.weight", weights(EMBED, FEED_FORWARD))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main(argv):
    if len(argv) != 2:
        print("usage: make-tiny-model.py OUT.gguf", file=sys.stderr)
        return 2
    out = Path(argv[1])
    if not out.parent.is_dir():
        print(f"make-tiny-model.py: no such directory: {out.parent}", file=sys.stderr)
        return 1
    write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
