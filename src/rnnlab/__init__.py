"""rnnlab: recurrent neural network language models you can train on your own text.

    import rnnlab
    lm = rnnlab.train("pydocs", "runs/demo", cell="lstm", time_budget=2)
    print(lm.generate("The ", length=300, temperature=0.8))
    lm = rnnlab.load("runs/demo")
    print(rnnlab.evaluate(lm, split="valid"))

`rnnlab.train`, `rnnlab.evaluate` are functions; their modules are `rnnlab.train` and
`rnnlab.evaluate` too (import names from them with `from rnnlab.train import TrainConfig`).
"""

__version__ = "0.1.0"

from rnnlab.corpus import Corpus, load_corpus  # noqa: E402
from rnnlab.errors import RnnlabError, RnnlabWarning  # noqa: E402
from rnnlab.lm import LanguageModel, load  # noqa: E402
from rnnlab.model import RNNLM, ModelConfig  # noqa: E402
from rnnlab.train import TrainConfig  # noqa: E402
from rnnlab.train import train as train  # noqa: E402  (shadows the module name on purpose)
from rnnlab.evaluate import evaluate as evaluate  # noqa: E402

__all__ = ["Corpus", "LanguageModel", "ModelConfig", "RNNLM", "RnnlabError", "RnnlabWarning", "TrainConfig",
           "evaluate", "load", "load_corpus", "train", "__version__"]
