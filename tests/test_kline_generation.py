"""Generation: greedy with the KV cache == without it, seeded sampling, the top-p sampler itself."""
from __future__ import annotations

import pytest

from tests.test_kline_support import needs_torch

needs_torch()

import torch  # noqa: E402

from tradeloop.models.errors import ModelError  # noqa: E402
from tradeloop.models.kline.config import TransformerConfig  # noqa: E402
from tradeloop.models.kline.generate import generate, sample, uniforms, window_seed  # noqa: E402
from tradeloop.models.kline.transformer import KVCache, KlineTransformer  # noqa: E402

VOCAB = (64, 32)


@pytest.fixture(scope="module")
def net():
    """A small transformer with weights large enough that its logits are far from ties."""
    torch.manual_seed(0)
    m = KlineTransformer(TransformerConfig(d_model=32, layers=2, heads=4, ff=64, max_len=300), VOCAB)
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim > 1:
                p.normal_(0, 0.4)
    return m.eval()


def ctx(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, VOCAB[0], (batch, length), generator=g),
                        torch.randint(0, VOCAB[1], (batch, length), generator=g)], dim=-1)


@pytest.mark.parametrize("length", [1, 17, 64, 200])
def test_greedy_with_the_cache_gives_the_same_tokens_as_recomputing_the_whole_context(net, length):
    c = ctx(3, length)
    with_cache = generate(net, c, 24, temperature=0, use_cache=True)
    without = generate(net, c, 24, temperature=0, use_cache=False)
    assert with_cache.shape == (3, 24, 2)
    assert torch.equal(with_cache, without)
    assert len(set(map(tuple, with_cache[0].tolist()))) > 1      # not a constant token: the check has teeth


def test_the_cache_holds_what_a_full_forward_computes(net):
    c = ctx(2, 40)
    with torch.inference_mode():
        full = net(c)
        cache = KVCache.empty(net, 2, 40, net.pos.weight)
        a = net(c[:, :25], cache)           # prefill
        b = net(c[:, 25:31], cache)         # several positions after cached ones (masked)
        d = torch.cat([net(c[:, t:t + 1], cache) for t in range(31, 40)], dim=1)   # one at a time
    assert cache.length == 40
    assert torch.allclose(torch.cat([a, b, d], dim=1), full, atol=1e-5)


def test_same_seed_same_paths_other_seed_other_paths(net):
    c = ctx(2, 30)
    u1 = uniforms([11, 12], 5, 10)
    a = generate(net, c, 10, samples=5, temperature=1.0, top_p=0.9, u=u1)
    b = generate(net, c, 10, samples=5, temperature=1.0, top_p=0.9, u=uniforms([11, 12], 5, 10))
    other = generate(net, c, 10, samples=5, temperature=1.0, top_p=0.9, u=uniforms([13, 14], 5, 10))
    assert a.shape == (10, 10, 2) and torch.equal(a, b) and not torch.equal(a, other)
    # rows are grouped by context; a context's paths do not depend on the other context
    alone = generate(net, c[1:], 10, samples=5, temperature=1.0, top_p=0.9, u=u1[1:])
    assert torch.equal(alone, a[5:])
    # sampling with and without the cache draws the same paths
    assert torch.equal(generate(net, c, 10, samples=5, temperature=1.0, top_p=0.9, u=u1, use_cache=False), a)


def test_a_window_seed_depends_on_the_seed_and_every_byte_of_the_window():
    import numpy as np

    w = np.arange(64 * 6, dtype=np.float32).reshape(64, 6)
    w2 = w.copy()
    w2[10, 3] += 1e-3
    assert window_seed(0, w) == window_seed(0, w.copy())
    assert len({window_seed(0, w), window_seed(1, w), window_seed(0, w2)}) == 3


def reference_sample(logits, temperature, top_p, u):
    """Top-p inverse-CDF sampling with a full sort of the vocabulary (what ``sample`` must equal)."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    sp, si = probs.sort(dim=-1, descending=True, stable=True)
    keep = (sp.cumsum(-1) - sp) < top_p
    cum = (sp * keep).cumsum(-1)
    k = torch.searchsorted(cum, (u * cum[:, -1]).unsqueeze(-1), right=True)
    return si.gather(-1, k.clamp_max(probs.shape[-1] - 1)).squeeze(-1)


def test_the_top_k_shortcut_picks_exactly_what_a_full_sort_picks():
    g = torch.Generator().manual_seed(3)
    sharp = torch.randn(500, 1024, generator=g) * 4       # top 64 hold > 0.9: the shortcut
    flat = torch.randn(500, 1024, generator=g) * 0.1      # they do not: the full sort
    logits = torch.cat([sharp, flat])
    u = torch.rand(1000, generator=g)
    for temp, p in ((1.0, 0.9), (0.7, 0.5), (1.3, 1.0)):
        assert torch.equal(sample(logits, temp, p, u), reference_sample(logits, temp, p, u))
    assert torch.equal(sample(logits, 1.0, 1e-9, u), logits.argmax(-1))    # tiny top-p is greedy
    assert torch.equal(sample(logits, 0.0, 0.9, u), logits.argmax(-1))


def test_bad_generation_requests_are_clear_errors(net):
    c = ctx(1, 10)
    with pytest.raises(ModelError, match="steps must be >= 1"):
        generate(net, c, 0, temperature=0)
    with pytest.raises(ModelError, match="exceed the model's max_len 300"):
        generate(net, ctx(1, 290), 20, temperature=0)
    with pytest.raises(ModelError, match="sampling needs uniforms"):
        generate(net, c, 3, temperature=1.0)
    with pytest.raises(ModelError, match=r"top_p must lie in \(0, 1\]"):
        generate(net, c, 3, temperature=1.0, top_p=0.0, u=uniforms([1], 1, 3))
