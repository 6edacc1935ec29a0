"""Rasa 3.6 graph components: ChineseNormalizer, CommunityEntityExtractor, RequestClassifier.

Name them in config.yml as ``nlu.components.ChineseNormalizer`` etc. (the project root
must be importable, e.g. PYTHONPATH=/work/main). Rasa places a component in the graph
by its registered type: the normalizer is registered as a MESSAGE_FEATURIZER only so
that Rasa runs it over the training data and hands its output to the next component;
it adds no features.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import pickle
import time
from pathlib import Path
from typing import Any

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.classifier import IntentClassifier
from rasa.nlu.constants import TOKENS_NAMES
from rasa.nlu.extractors.extractor import EntityExtractorMixin
from rasa.shared.constants import INTENT_MESSAGE_PREFIX
from rasa.shared.nlu.constants import ENTITIES, INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from nlu.extractors import extract_entities, warm_up
from nlu.normalize import normalize
from nlu.request_model import (
    CLASSIFIER_DEFAULTS,
    ModelConfig,
    RequestModel,
    decide,
    model_config_from,
)
from nlu.safety import detect_emergency

logger = logging.getLogger(__name__)

ORIGINAL_TEXT = "original_text"
CATEGORY = "category"
_MODEL_FILE = "request_model.pkl"


def _source_fingerprint(*modules: str) -> str:
    """Hash the source of helper modules, so Rasa's training cache sees their edits.

    Rasa fingerprints a node by its component class source and config only; without
    this, an edit to nlu/normalize.py would reuse stale cached training output.
    """
    digest = hashlib.sha256()
    for module in modules:
        digest.update((Path(__file__).parent / f"{module}.py").read_bytes())
    return digest.hexdigest()


def _normalizable(message: Message) -> bool:
    text = message.get(TEXT)
    # "/intent{...}" messages are parsed by RegexMessageHandler and must stay verbatim.
    return isinstance(text, str) and bool(text) and not text.startswith(INTENT_MESSAGE_PREFIX)


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.MESSAGE_FEATURIZER, is_trainable=False)
class ChineseNormalizer(GraphComponent):
    """Rewrite message text with nlu.normalize and keep the original as `original_text`."""

    @staticmethod
    def get_default_config() -> dict[str, Any]:
        """Return the default config (the component has no options)."""
        return {}

    @classmethod
    def fingerprint_addon(cls, config: dict[str, Any]) -> str | None:
        """Return a hash of nlu/normalize.py."""
        return _source_fingerprint("normalize")

    @classmethod
    def create(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> ChineseNormalizer:
        """Create the component."""
        return cls()

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        """Normalise every training example that has no annotated entities."""
        for message in training_data.training_examples:
            if message.get(ENTITIES):
                # Offsets of annotated entities would no longer fit the rewritten text.
                continue
            self._rewrite(message)
        return training_data

    def process(self, messages: list[Message]) -> list[Message]:
        """Normalise incoming messages."""
        for message in messages:
            self._rewrite(message)
        return messages

    @staticmethod
    def _rewrite(message: Message) -> None:
        if not _normalizable(message):
            return
        original = message.get(TEXT)
        message.set(ORIGINAL_TEXT, original, add_to_output=True)
        message.set(TEXT, normalize(original))


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.ENTITY_EXTRACTOR, is_trainable=False)
class CommunityEntityExtractor(GraphComponent, EntityExtractorMixin):
    """Add building/unit/room/floor/phone/time/emergency entities found by nlu.extractors."""

    @staticmethod
    def get_default_config() -> dict[str, Any]:
        """Return the default config: which entity types to keep (empty keeps all)."""
        return {"dimensions": []}

    def __init__(self, config: dict[str, Any]) -> None:
        """Store the config."""
        self._dimensions = set(config.get("dimensions") or [])

    @classmethod
    def create(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> CommunityEntityExtractor:
        """Create the component and build the spaCy matcher now rather than on message one."""
        warm_up()
        return cls({**cls.get_default_config(), **config})

    def process(self, messages: list[Message]) -> list[Message]:
        """Append the rule-based entities to each message."""
        for message in messages:
            text = message.get(TEXT)
            if not isinstance(text, str) or not text:
                continue
            found = self.filter_irrelevant_entities(extract_entities(text), self._dimensions)
            for entity in found:
                entity["extractor"] = self.name
            message.set(ENTITIES, message.get(ENTITIES, []) + found, add_to_output=True)
        return messages


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=True)
class RequestClassifier(GraphComponent, IntentClassifier):
    """Classify intents with TF-IDF + sklearn and collapse report_* into report_problem."""

    @staticmethod
    def get_default_config() -> dict[str, Any]:
        """Return the default config (see nlu.request_model.CLASSIFIER_DEFAULTS)."""
        return copy.deepcopy(CLASSIFIER_DEFAULTS)

    def __init__(
        self,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        model: RequestModel | None = None,
    ) -> None:
        """Store the config and an optional trained model."""
        self._config = {**self.get_default_config(), **config}
        self._model_storage = model_storage
        self._resource = resource
        self._model = model

    @staticmethod
    def model_config(config: dict[str, Any]) -> ModelConfig:
        """Translate the component config into the model's hyper-parameters."""
        return model_config_from(config)

    @classmethod
    def fingerprint_addon(cls, config: dict[str, Any]) -> str | None:
        """Return a hash of nlu/request_model.py."""
        return _source_fingerprint("request_model")

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> None:
        """Fail early on an unknown estimator name."""
        cls.model_config({**cls.get_default_config(), **config})

    @classmethod
    def create(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> RequestClassifier:
        """Create an untrained component."""
        cls.validate_config(config)
        return cls(config, model_storage, resource)

    def train(self, training_data: TrainingData) -> Resource:
        """Fit the model on all intent examples and persist it."""
        examples = [m for m in training_data.intent_examples if m.get(INTENT) and m.get(TEXT)]
        if len({m.get(INTENT) for m in examples}) < 2:
            logger.warning("RequestClassifier needs examples of at least two intents; not trained.")
            return self._resource
        started = time.perf_counter()
        model = RequestModel(config=self.model_config(self._config))
        model.fit(
            [m.get(TEXT) for m in examples],
            [_tokens(m) for m in examples],
            [m.get(INTENT) for m in examples],
        )
        self._model = model
        logger.info(
            "RequestClassifier (%s) trained on %d examples in %.2fs.",
            model.config.estimator,
            len(examples),
            time.perf_counter() - started,
        )
        self.persist()
        return self._resource

    def persist(self) -> None:
        """Write the fitted model to the model storage."""
        with self._model_storage.write_to(self._resource) as directory:
            with open(directory / _MODEL_FILE, "wb") as handle:
                pickle.dump(self._model, handle, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def load(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
        **kwargs: Any,
    ) -> RequestClassifier:
        """Load the fitted model; an untrained component when nothing was persisted."""
        try:
            with model_storage.read_from(resource) as directory:
                # The pickle is written by train() of this project's own model package.
                with open(directory / _MODEL_FILE, "rb") as handle:
                    model = pickle.load(handle)  # noqa: S301
        except (ValueError, FileNotFoundError):
            logger.debug("No trained RequestClassifier in resource '%s'.", resource.name)
            model = None
        return cls(config, model_storage, resource, model)

    def process(self, messages: list[Message]) -> list[Message]:
        """Set intent, intent_ranking, the category property and a category entity."""
        if self._model is None or not messages:
            return messages
        texts = [m.get(TEXT) or "" for m in messages]
        tokens = [_tokens(m) for m in messages]
        probabilities = self._model.predict_proba(texts, tokens)
        for message, text, words, row in zip(messages, texts, tokens, probabilities, strict=True):
            known = self._model.known_fraction(words)
            decision = decide(
                self._model.labels,
                row.tolist(),
                emergency_kind=detect_emergency(text),
                emergency_categories=self._config["emergency_categories"],
                override_intents=self._config["emergency_override_intents"],
                ranking_length=self._config["ranking_length"],
                category_ranking_length=self._config["category_ranking_length"],
                collapse_first=self._config["collapse_first"],
                min_label_probability=self._config["min_label_probability"],
                known_fraction=known,
                min_known_fraction=self._config["min_known_fraction"],
            )
            message.set(
                INTENT,
                {"name": decision.intent, "confidence": decision.confidence},
                add_to_output=True,
            )
            message.set(INTENT_RANKING_KEY, decision.ranking, add_to_output=True)
            message.set(
                CATEGORY,
                {
                    "name": decision.category,
                    "confidence": decision.category_confidence,
                    "ranking": decision.category_ranking,
                },
                add_to_output=True,
            )
            if decision.is_report:
                # Only reports carry the category entity, so chit-chat cannot overwrite a slot.
                entity = {
                    "entity": CATEGORY,
                    "value": decision.category,
                    "start": 0,
                    "end": len(text),
                    "confidence": decision.category_confidence,
                    "extractor": self.__class__.__name__,
                }
                message.set(ENTITIES, message.get(ENTITIES, []) + [entity], add_to_output=True)
        return messages


def _tokens(message: Message) -> list[str]:
    """Return the token texts the tokenizer stored, or jieba's when no tokenizer ran."""
    tokens = message.get(TOKENS_NAMES[TEXT])
    if tokens:
        return [token.text for token in tokens]
    import jieba

    return jieba.lcut(message.get(TEXT) or "")
