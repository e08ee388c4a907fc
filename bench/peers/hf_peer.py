"""Hugging Face transformers: `GPT2LMHeadModel` built from a `GPT2Config` of the same shape.

Two decoding set-ups: the default dynamic KV cache run eagerly (`transformers`), and the static
cache with the forward pass compiled (`transformers_static_compiled`). On CUDA, `generate` compiles
the decoding step itself once the cache is static (its documented path); on CPU it does not, so the
forward pass is wrapped in `torch.compile` here, as transformers' docs show.
"""

from __future__ import annotations

import torch

from bench.peers.base import Peer, Shape

EOS_ID = 3  # lmforge's byte-level BPE puts <|endoftext|> at id 3; never produced early (min_new_tokens)


class HFPeer(Peer):
    name = "transformers"

    def __init__(self, shape: Shape, device: torch.device, static_compiled: bool = False):
        super().__init__(shape, device)
        from transformers import AutoModelForCausalLM, GPT2Config

        cfg = GPT2Config(
            vocab_size=shape.vocab_size, n_positions=shape.context_length, n_embd=shape.d_model,
            n_layer=shape.n_layer, n_head=shape.n_head, activation_function="gelu",  # exact GELU, as the others
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
            tie_word_embeddings=True, bos_token_id=EOS_ID, eos_token_id=EOS_ID, pad_token_id=EOS_ID,
        )
        self.model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").to(device)
        self.static_compiled = static_compiled
        if static_compiled:
            self.name = "transformers_static_compiled"
            self.model.generation_config.cache_implementation = "static"
            if device.type == "cpu":
                self.model.forward = torch.compile(self.model.forward, dynamic=False)

    def forward_logits(self, module, x):
        return module(input_ids=x, use_cache=False).logits  # no cache while training

    def _generate(self, ids, n, **kw):
        return self.model.eval().generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
            pad_token_id=EOS_ID, eos_token_id=EOS_ID, **kw)

    def greedy(self, ids, n):
        return self._generate(ids, n, do_sample=False)

    def sample(self, ids, n, temperature, top_k, seed):
        torch.manual_seed(seed)
        return self._generate(ids, n, do_sample=True, temperature=temperature, top_k=top_k, top_p=1.0)

    def attention_backend(self) -> str:
        return str(getattr(self.model.config, "_attn_implementation", "?"))
