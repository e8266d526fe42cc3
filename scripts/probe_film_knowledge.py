"""Film knowledge probe: greedy completions of 10 film facts by embedded backbones (fp32, 10 new tokens).

python scripts/probe_film_knowledge.py smollm2 gemma3-270m   # prints a Markdown row per fact, then the score
A fact counts as known when the expected name appears in the completion.
"""
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minigpt4.llm.embedded import prepare  # noqa: E402

FACTS = [("Star Wars (1977) was directed by", "Lucas"), ("Jaws (1975) was directed by", "Spielberg"),
         ("The Godfather (1972) was directed by", "Coppola"), ("Pulp Fiction (1994) was directed by", "Tarantino"),
         ("Titanic (1997) was directed by", "Cameron"), ("Psycho (1960) was directed by", "Hitchcock"),
         ("Toy Story (1995) was made by the animation studio", "Pixar"),
         ("Schindler's List (1993) was directed by", "Spielberg"),
         ("The Terminator (1984) stars Arnold", "Schwarzenegger"), ("Casablanca (1942) stars Humphrey", "Bogart")]
for name in sys.argv[1:]:
    d = str(prepare(name))
    tok = AutoTokenizer.from_pretrained(d)
    lm = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    hits = 0
    for prompt, answer in FACTS:
        ids = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            out = lm.generate(**ids, max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id)
        text = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).replace("\n", " ")
        hits += answer in text
        print(f"| {name} | {prompt} | {text.strip()} | {'yes' if answer in text else 'no'} |", flush=True)
    print(f"{name}: {hits}/{len(FACTS)} correct")
