"""The custom Rasa components trained and run directly, without `rasa train`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

DICTIONARY = Path(__file__).resolve().parents[2] / "nlu" / "jieba"

EXAMPLES: dict[str, list[str]] = {
    "greet": ["你好", "您好", "喂 你好", "早上好", "你好啊 同志", "哈喽"],
    "thank": ["谢谢", "谢谢你们", "太感谢了", "多谢", "麻烦你们了 谢谢", "辛苦了 谢谢"],
    "report_elevator_fault": [
        "电梯坏了",
        "三号楼电梯又坏了",
        "电梯不动了 老人下不了楼",
        "电梯门关不上",
        "电梯运行有异响",
        "二单元电梯停运好几天了",
    ],
    "report_elevator_trapped": [
        "电梯困人了",
        "有人被关在电梯里了",
        "我被困在电梯里出不来",
        "电梯卡住了里面有人",
        "快来 电梯里困着老人",
        "电梯停在半空 里面有人喊救命",
    ],
    "report_water_leak": [
        "厨房漏水了",
        "楼上往我家渗水",
        "卫生间天花板漏水",
        "水管爆了 水流了一地",
        "墙面一直在渗水",
        "楼上漏水漏到我家客厅",
    ],
}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Train the pipeline on a small in-memory TrainingData and load the classifier back."""
    from rasa.engine.graph import ExecutionContext, GraphSchema
    from rasa.engine.storage.local_model_storage import LocalModelStorage
    from rasa.engine.storage.resource import Resource
    from rasa.nlu.tokenizers.jieba_tokenizer import JiebaTokenizer
    from rasa.shared.nlu.training_data.message import Message
    from rasa.shared.nlu.training_data.training_data import TrainingData

    from nlu.components import ChineseNormalizer, CommunityEntityExtractor, RequestClassifier

    storage = LocalModelStorage(tmp_path_factory.mktemp("model_storage"))
    context = ExecutionContext(GraphSchema({}), model_id="test")
    normalizer = ChineseNormalizer.create({}, storage, Resource("normalizer"), context)
    tokenizer = JiebaTokenizer.create(
        {**JiebaTokenizer.get_default_config(), "dictionary_path": str(DICTIONARY)},
        storage,
        Resource("tokenizer"),
        context,
    )
    extractor = CommunityEntityExtractor.create({}, storage, Resource("extractor"), context)
    config = {**RequestClassifier.get_default_config(), "classifier": "linear_svc"}
    messages = [
        Message(data={"text": text, "intent": intent})
        for intent, texts in EXAMPLES.items()
        for text in texts
    ]
    training_data = TrainingData(training_examples=messages)
    normalizer.process_training_data(training_data)
    tokenizer.process_training_data(training_data)
    trainer = RequestClassifier.create(config, storage, Resource("classifier"), context)
    trainer.train(training_data)
    classifier = RequestClassifier.load(config, storage, Resource("classifier"), context)

    def parse(text: str) -> Message:
        message = Message(data={"text": text})
        for component in (normalizer, tokenizer, extractor, classifier):
            component.process([message])
        return message

    return {
        "parse": parse,
        "training_data": training_data,
        "storage": storage,
        "context": context,
        "config": config,
    }


def _entities(message: Any) -> dict[str, str]:
    return {e["entity"]: e["value"] for e in message.get("entities", [])}


def test_training_data_is_normalised(pipeline: dict[str, Any]) -> None:
    texts = [m.get("text") for m in pipeline["training_data"].training_examples]
    assert "3号楼电梯又坏了" in texts
    assert "三号楼电梯又坏了" not in texts


def test_elevator_fault_report(pipeline: dict[str, Any]) -> None:
    message = pipeline["parse"]("喂 五号楼二单元的电梯又坏了 我腿脚不好下不了楼")
    assert message.get("text") == "喂 5号楼2单元的电梯又坏了 我腿脚不好下不了楼"
    assert message.get("original_text") == "喂 五号楼二单元的电梯又坏了 我腿脚不好下不了楼"
    assert message.get("intent")["name"] == "report_problem"
    category = message.get("category")
    assert category["name"] == "elevator_fault"
    assert 0.0 < category["confidence"] <= 1.0
    assert [r["name"] for r in category["ranking"]][0] == "elevator_fault"
    assert len(category["ranking"]) == 3  # only three report_* labels were trained
    entities = _entities(message)
    assert entities["building"] == "5"
    assert entities["unit"] == "2"
    assert entities["category"] == "elevator_fault"
    ranking = message.get("intent_ranking")
    assert ranking[0]["name"] == "report_problem"
    assert not any(
        r["name"].startswith("report_") and r["name"] != "report_problem" for r in ranking
    )


def test_trapped_is_an_emergency(pipeline: dict[str, Any]) -> None:
    message = pipeline["parse"]("救命 电梯困人了 三号楼")
    assert message.get("intent")["name"] == "report_emergency"
    assert message.get("category")["name"] == "elevator_trapped"
    assert _entities(message)["emergency"] == "trapped"


def test_safety_rule_makes_a_leak_an_emergency(pipeline: dict[str, Any]) -> None:
    message = pipeline["parse"]("楼上漏水 我爸滑倒了起不来")
    assert message.get("intent")["name"] == "report_emergency"
    assert _entities(message)["emergency"] == "medical"


def test_greeting_keeps_its_intent_and_gets_no_category_entity(pipeline: dict[str, Any]) -> None:
    message = pipeline["parse"]("你好")
    assert message.get("intent")["name"] == "greet"
    assert message.get("category")["name"] in {"elevator_fault", "elevator_trapped", "water_leak"}
    assert "category" not in _entities(message)


def test_output_properties_include_category_and_original_text(pipeline: dict[str, Any]) -> None:
    message = pipeline["parse"]("厨房漏水了")
    output = message.as_dict(only_output_properties=True)
    assert {"intent", "intent_ranking", "category", "original_text", "entities"} <= set(output)


def test_intent_messages_are_not_normalised(pipeline: dict[str, Any]) -> None:
    message = pipeline["parse"]('/inform{"building": "三"}')
    assert message.get("text") == '/inform{"building": "三"}'
    assert message.get("original_text") is None


def test_untrained_classifier_leaves_messages_alone(pipeline: dict[str, Any]) -> None:
    from rasa.engine.storage.resource import Resource
    from rasa.shared.nlu.training_data.message import Message

    from nlu.components import RequestClassifier

    empty = RequestClassifier.load(
        pipeline["config"], pipeline["storage"], Resource("never_trained"), pipeline["context"]
    )
    message = Message(data={"text": "你好"})
    empty.process([message])
    assert message.get("intent") is None


def test_unknown_classifier_name_fails_at_config_time() -> None:
    from nlu.components import RequestClassifier
    from nlu.request_model import UnknownEstimatorError

    with pytest.raises(UnknownEstimatorError, match="linear_svc"):
        RequestClassifier.validate_config({"classifier": "xgboost"})


def test_fingerprints_follow_the_helper_modules() -> None:
    from nlu.components import ChineseNormalizer, RequestClassifier

    normalizer = ChineseNormalizer.fingerprint_addon({})
    classifier = RequestClassifier.fingerprint_addon({})
    assert normalizer and classifier and normalizer != classifier
    assert normalizer == ChineseNormalizer.fingerprint_addon({"anything": 1})
