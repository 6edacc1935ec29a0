"""Table-driven tests for nlu.safety."""

from __future__ import annotations

import pytest

from nlu.safety import detect_emergency, find_emergency, raise_urgency

EMERGENCIES: list[tuple[str, str]] = [
    # trapped in a lift
    ("电梯困人了", "trapped"),
    ("喂 五号楼二单元电梯里困了人 快来人啊", "trapped"),
    ("我妈被困在电梯里了", "trapped"),
    ("有人被关在电梯里了", "trapped"),
    ("救命啊电梯卡住了我出不来", "trapped"),
    ("电梯停在两层中间了 里面还有个小孩在哭", "trapped"),
    ("电梯门打不开 我们三个人在里边 手机快没电了", "trapped"),
    ("电梯里困着个坐轮椅的老人 门一直不开", "trapped"),
    ("我被锁在轿厢里二十分钟了", "trapped"),
    ("电梯卡在8楼和9楼之间", "trapped"),
    ("卡在八楼和九楼之间了", "trapped"),
    ("困电梯了", "trapped"),
    ("我在电梯里面 按什么键都没反应", "trapped"),
    ("那个铁盒子里头关着个老太太", "trapped"),
    # ASR homophones and fillers
    ("电体困人了快派人过来", "trapped"),
    ("电替卡住了里面有人", "trapped"),
    ("嗯 电梯 啊 那个 困人了", "trapped"),
    ("电梯捆人了", "trapped"),
    # gas
    ("厨房有股燃气味", "gas"),
    ("厨房有股然气味", "gas"),
    ("闻到一股煤气味", "gas"),
    ("楼道里有天然气的味道", "gas"),
    ("家里有臭鸡蛋味", "gas"),
    ("燃气管子在漏 嘶嘶的", "gas"),
    ("煤气罐漏气了", "gas"),
    ("燃气泄漏", "gas"),
    ("燃气报警器一直在响", "gas"),
    ("燃气灶打不着火 还有股煤气味", "gas"),
    ("老两口煤气中毒了", "gas"),
    # fire
    ("楼下着火了", "fire"),
    ("三楼起火了 快打119", "fire"),
    ("电动车充电冒烟了", "fire"),
    ("插座冒黑烟", "fire"),
    ("楼道里全是烟", "fire"),
    ("电瓶炸了", "fire"),
    ("着伙了", "fire"),
    ("楼道着火了 有人晕倒了", "fire"),
    # medical
    ("我爸晕倒了", "medical"),
    ("老太太昏迷不醒", "medical"),
    ("老人摔倒了起不来", "medical"),
    ("邻居大爷在楼道里摔了一跤爬不起来", "medical"),
    ("我爸没气了", "medical"),
    ("老伴没有呼吸了", "medical"),
    ("他心脏病犯了", "medical"),
    ("孩子抽搐 口吐白沫", "medical"),
    ("老人突然中风了", "medical"),
    ("喘不上气", "medical"),
    ("老人快不行了", "medical"),
    ("叫不醒了", "medical"),
    ("摔得头破血流", "medical"),
    # violence
    ("有人拿着刀在楼道里", "violence"),
    ("楼下有人持刀", "violence"),
    ("他们打得头破血流", "violence"),
    ("有人在砍人", "violence"),
    ("隔壁正在家暴 快来", "violence"),
    ("拿着棍子追着打", "violence"),
]

NOT_EMERGENCIES: list[str] = [
    "燃气灶打不着火",
    "燃气灶点不着火",
    "燃气灶火苗小",
    "电梯坏了",
    "喂 五号楼二单元的电梯又坏了 我腿脚不好下不了楼",
    "电梯门夹人",
    "电梯坏了还好没人被困",
    "物业晚上关电梯",
    "暖气不热",
    "暖气片漏气",
    "我想打疫苗",
    "想签约家庭医生",
    "我爸中风好几年了 想申请上门诊疗",
    "燃气费怎么交",
    "燃气表没气了",
    "他家燃气没气了",
    "自行车轮胎漏气",
    "我的个人信息泄露了",
    "水管泄漏了",
    "飞线充电容易着火",
    "担心电梯困人",
    "楼道堆物有火灾隐患",
    "灭火器过期了",
    "消防通道被堵了",
    "有人在楼道里抽烟 全是烟味",
    "树被砍了",
    "要杀虫",
    "楼上打架了",
    "突然气味很大",
    "电梯快不行了 天天坏",
    "我快气炸了",
    "没着火 就是有点焦味",
    "",
    "你好",
]


@pytest.mark.parametrize(("text", "kind"), EMERGENCIES)
def test_detect_emergency_fires(text: str, kind: str) -> None:
    assert detect_emergency(text) == kind


@pytest.mark.parametrize("text", NOT_EMERGENCIES)
def test_detect_emergency_stays_quiet(text: str) -> None:
    assert detect_emergency(text) is None


def test_find_emergency_span_maps_back_to_the_original_text() -> None:
    text = "喂 嗯 电梯 困人了！"
    hit = find_emergency(text)
    assert hit is not None
    assert hit.kind == "trapped"
    assert text[hit.start : hit.end] == "电梯 困人"


def test_find_emergency_span_after_full_width_characters() -> None:
    text = "３号楼 有股煤气味"
    hit = find_emergency(text)
    assert hit is not None
    assert text[hit.start : hit.end] == "煤气味"


RAISES: list[tuple[str, str, str]] = [
    ("独居老人家里漏水", "P2", "P1"),
    ("家里只有老人 停电了", "P2", "P1"),
    ("我妈瘫痪在床 暖气不热", "P2", "P1"),
    ("孕妇在家 停水了", "P2", "P1"),
    ("楼道灯坏了 我是孕妇", "P3", "P2"),
    ("小孩被困在屋里", "P3", "P2"),
    ("孩子在里面出不来", "P2", "P1"),
    ("水漫到插座了", "P3", "P2"),
    ("楼上漏水 水都流到电线上了", "P2", "P1"),
    ("墙上插座漏电", "P3", "P2"),
    ("电线裸露在外面", "P4", "P3"),
    ("电梯又坏了 我腿脚不好下不了楼", "P2", "P1"),
    ("垃圾分类不懂 家里只有老人", "P4", "P3"),
]


@pytest.mark.parametrize(("text", "before", "after"), RAISES)
def test_raise_urgency_by_one_level(text: str, before: str, after: str) -> None:
    urgency, reason = raise_urgency(text, before)
    assert urgency == after
    assert reason


@pytest.mark.parametrize(
    ("text", "before"),
    [("楼道灯坏了", "P3"), ("暖气不热", "P2"), ("垃圾没人收", "P4"), ("家里没有老人", "P3")],
)
def test_raise_urgency_leaves_plain_requests(text: str, before: str) -> None:
    assert raise_urgency(text, before) == (before, None)


def test_raise_urgency_stops_at_p1() -> None:
    assert raise_urgency("独居老人被困电梯", "P1") == ("P1", None)


def test_raise_urgency_rejects_unknown_level() -> None:
    with pytest.raises(ValueError, match="P4, P3, P2, P1"):
        raise_urgency("独居老人", "P0")
