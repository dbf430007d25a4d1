"""rnnlab: recurrent neural network language models you can train on your own text.

    import rnnlab
    lm = rnnlab.train("pydocs", "runs/demo", cell="lstm", time_budget=2)
    print(lm.generate("The ", length=300, temperature=0.8))
    lm = rnnlab.load("runs/demo")
    print(rnnlab.evaluate(lm, split="valid"))

The names below are the public API. They are imported on first use, so that `import rnnlab`
(and `rnnlab --help`) does not pay for importing torch.
"""

import importlib

from rnnlab.errors import RnnlabError, RnnlabWarning
from rnnlab.version import __version__

_API = {
    "Corpus": "rnnlab.data.corpus", "load_corpus": "rnnlab.data.corpus",
    "ModelConfig": "rnnlab.models.config", "RNNLM": "rnnlab.models.rnnlm",
    "LanguageModel": "rnnlab.inference.lm", "load": "rnnlab.inference.loading",
    "evaluate": "rnnlab.inference.evaluate",
    "TrainConfig": "rnnlab.training.config", "train": "rnnlab.training.pipeline",
}

__all__ = ["Corpus", "LanguageModel", "ModelConfig", "RNNLM", "RnnlabError", "RnnlabWarning", "TrainConfig",
           "evaluate", "load", "load_corpus", "train", "__version__"]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'rnnlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__():
    return sorted(set(globals()) | set(_API))
