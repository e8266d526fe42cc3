"""CTRL's pieces: the fine-grained contrastive loss against a hand computation in both directions, alignment that
pulls matched pairs together, DIN's hidden layer under its output, and mean-pooled text representations that
padding does not move."""

import math

import pytest
import torch

from minigpt4.encoders.ctrl import AlignmentHeads, contrastive_loss, maxsim
from minigpt4.encoders.din import DIN


def _hand_maxsim(a, b):
    out = [[0.0] * len(b) for _ in a]
    for i, ai in enumerate(a):
        for j, bj in enumerate(b):
            out[i][j] = sum(max(sum(x * y for x, y in zip(am, bn)) for bn in bj) for am in ai)
    return out


def _hand_infonce(sim, tau):
    total = 0.0
    for k, row in enumerate(sim):
        logits = [s / tau for s in row]
        top = max(logits)
        total += -(logits[k] - top - math.log(sum(math.exp(x - top) for x in logits)))
    return total / len(sim)


def test_loss_equals_a_hand_computation_in_both_directions():
    collab = torch.tensor([[[1.0, 0.0], [0.5, -1.0]],
                           [[0.0, 2.0], [1.0, 1.0]],
                           [[-1.0, 0.5], [0.2, 0.3]]])
    text = torch.tensor([[[0.5, 0.5], [1.0, -0.5]],
                         [[-0.3, 1.0], [0.0, 0.4]],
                         [[2.0, 0.1], [-1.0, -1.0]]])
    tau = 0.7
    t2c, c2t = _hand_maxsim(text.tolist(), collab.tolist()), _hand_maxsim(collab.tolist(), text.tolist())
    torch.testing.assert_close(maxsim(text, collab), torch.tensor(t2c))
    assert not torch.allclose(torch.tensor(t2c), torch.tensor(c2t).T)  # not symmetric: each way has its own
    loss, text_to_tab, tab_to_text = contrastive_loss(collab, text, tau)
    assert text_to_tab.item() == pytest.approx(_hand_infonce(t2c, tau))
    assert tab_to_text.item() == pytest.approx(_hand_infonce(c2t, tau))
    assert loss.item() == pytest.approx((_hand_infonce(t2c, tau) + _hand_infonce(c2t, tau)) / 2)


def test_alignment_lowers_the_loss_and_pulls_matched_pairs_together():
    """Two views of one latent (a collaborative vector and a 'text' vector through another random map): training
    the heads raises a matched pair's similarity above a shuffled pair's."""
    g = torch.Generator().manual_seed(0)
    latent = torch.randn(256, 8, generator=g)
    collab = latent @ torch.randn(8, 20, generator=g) + 0.1 * torch.randn(256, 20, generator=g)
    text = latent @ torch.randn(8, 48, generator=g) + 0.1 * torch.randn(256, 48, generator=g)
    torch.manual_seed(0)
    heads = AlignmentHeads(20, 48, proj_dim=32, subspaces=4, sub_dim=8)
    opt = torch.optim.AdamW(heads.parameters(), lr=1e-2)

    def gap():
        with torch.no_grad():
            sim = maxsim(*reversed(heads(collab, text)))  # text to tabular
            return (sim.diag().mean() - sim.mean()).item()

    first, before = contrastive_loss(*heads(collab, text), 0.7)[0].item(), gap()
    for _ in range(150):
        perm = torch.randperm(256)[:64]
        loss = contrastive_loss(*heads(collab[perm], text[perm]), 0.7)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = contrastive_loss(*heads(collab, text), 0.7)[0].item()
    assert last < first - 1.0
    assert gap() > max(before, 0) + 1.0


def test_din_hidden_is_what_its_output_layer_reads():
    torch.manual_seed(0)
    din = DIN(10, 20, embedding_size=12, maxlen=4).eval()
    users, items = torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])
    his = torch.tensor([[0, 0, 1, 2], [0, 3, 4, 5], [1, 2, 3, 4]])
    hidden = din.hidden(users, items, his)
    assert hidden.shape == (3, 80)
    out = din.fc_layer.fc[-1]
    torch.testing.assert_close(din(users, items, his), (hidden @ out.weight.T + out.bias).squeeze(-1))


def test_mean_pooling_leaves_padding_out(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from minigpt4.llm.text_embedding import mean_pooled

    lm = AutoModelForCausalLM.from_pretrained(str(tiny_llama)).eval()
    tok = AutoTokenizer.from_pretrained(str(tiny_llama))
    texts = ["This is a user, who has recently watched \"Heat (1995)\".", "short", "a medium length text here"]
    together = mean_pooled(lm, tok, texts, batch_size=3)
    alone = torch.cat([mean_pooled(lm, tok, [t], batch_size=1) for t in texts])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)
    ids = tok(texts[1], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        direct = lm.get_decoder()(input_ids=ids).last_hidden_state.mean(1)
    torch.testing.assert_close(together[1:2], direct, atol=1e-5, rtol=1e-4)
