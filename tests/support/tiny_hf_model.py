"""Write two tiny random-weight Llama models in Hugging Face's layout for vLLM's server:
OUT/tiny-llama (with a chat template in tokenizer_config.json) and OUT/tiny-llama-no-template
(the same without one, as DialoGPT, the image's default model, has none).

    python tiny_hf_model.py OUT

Runs on the Python of the vLLM install (tests/support/vllm.py), which has torch, transformers
and tokenizers. The tokenizer is a byte-level BPE trained here on a few sentences; its
alphabet is printable ASCII, so whatever the random weights pick decodes to valid text
(gibberish: test the protocol, not the words), and never stops before max_tokens. Every run
writes the same files (fixed seed).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL = ["<s>", "</s>", "<unk>"]
CORPUS = [
    "hello world, this is the cube agent talking to a tiny model.",
    "The quick brown fox jumps over the lazy dog; 0123456789!",
    "user: hi there. assistant: hello, how can I help you today?",
    "Confidential VMs serve language models behind one agent.",
]
# The model's own template, different from the image's (generator/templates/vllm/etc/vllm/
# chat-template.jinja), so a test can tell which one rendered a conversation.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
    "{{ eos_token }}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # ByteLevel writes the printable ASCII bytes as themselves, space as "Ġ", newline "Ċ".
    alphabet = [chr(b) for b in range(0x21, 0x7F)] + ["Ġ", "Ċ"]
    trainer = trainers.BpeTrainer(
        vocab_size=384, special_tokens=SPECIAL, initial_alphabet=alphabet, limit_alphabet=128
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


@torch.no_grad()
def never_special(model: LlamaForCausalLM, ids: list[int]) -> None:
    """Make the special tokens (end of text among them) unreachable, so every answer runs
    to max_tokens in text: random weights would otherwise stop or write nothing now and
    then, and a test would fail by chance. Hidden dimension 0 is held at a positive value
    (every embedding has 1 there; attention and MLP never write to it), so a very negative
    weight there in the output layer puts those tokens' logits far below all others."""
    inner = model.model
    inner.embed_tokens.weight[:, 0] = 1.0
    for layer in inner.layers:
        layer.self_attn.o_proj.weight[0, :] = 0.0
        layer.mlp.down_proj.weight[0, :] = 0.0
    model.lm_head.weight[ids, 0] = -100.0


def main(out: Path) -> None:
    torch.manual_seed(0)
    tok = tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    never_special(model, [tok.convert_tokens_to_ids(t) for t in SPECIAL])
    with_template = out / "tiny-llama"
    model.save_pretrained(with_template, safe_serialization=True)
    tok.save_pretrained(with_template)
    # transformers may write the template to chat_template.jinja; keep it in one place.
    (with_template / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer_config = with_template / "tokenizer_config.json"
    settings = json.loads(tokenizer_config.read_text())
    settings["chat_template"] = CHAT_TEMPLATE
    tokenizer_config.write_text(json.dumps(settings, indent=2))

    without = out / "tiny-llama-no-template"
    shutil.copytree(with_template, without)
    del settings["chat_template"]
    (without / "tokenizer_config.json").write_text(json.dumps(settings, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
