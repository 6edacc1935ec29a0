"""Anger and distress detection: targeted cases, and a labelled evaluation set.

The evaluation sentences were written before the lexicon, from how residents write and
speak to a community hotline (SMS, WeChat, unpunctuated speech-to-text), not from its
patterns. The ordinary set deliberately carries the words that make detectors
trigger-happy: 投诉 about a neighbour, 急, 好几天, 老人, 害怕 about a hazard, 12345.
"""
from __future__ import annotations

import pytest

from nlu.distress import DistressSignal, detect_distress

pytestmark = pytest.mark.unit

# Angry at the service, or in distress: a person should join the conversation.
UPSET: tuple[str, ...] = (
    "气死我了，电梯又坏了，你们到底修不修！",
    "你们这是什么破服务，报了三次都没人来",
    "太过分了吧，说好上午来的，等到现在人影都没有",
    "我要投诉你们，态度太差了",
    "再不来修我就打12345投诉你们",
    "我已经打市长热线了，你们看着办",
    "打了五次电话都没人管，你们物业是干什么吃的",
    "三天了还没人来修，你们到底管不管",
    "一个礼拜了都没人来看一眼",
    "你们这群废物，拿了物业费不干活",
    "妈的，又停水，还让不让人活了",
    "什么玩意儿，问了半天答非所问",
    "你是机器人吧？听不懂人话是不是？？？",
    "到底有没有人管啊！！！",
    "别跟我打官腔，叫你们领导来",
    "每次都推来推去，踢皮球",
    "我受够了，这个月第四次漏水了都没人处理",
    "说了多少遍了还是没修好",
    "你们就会敷衍，一点用都没有",
    "物业费白交了",
    "有没有搞错，刚修好又坏了，糊弄谁呢",
    "简直岂有此理",
    "我要去信访，找电视台曝光你们",
    "垃圾物业，垃圾服务",
    "滚，我不要跟机器说话",
    "你们这服务态度真是太恶劣了",
    "等了两个小时了还没人来，到底还来不来",
    "反映了好几次了，一直没人理",
    "上次报修到现在半个月了，没有任何回音，太不像话了",
    "你们能不能干点人事",
    "投诉！投诉！我要投诉你们物业经理",
    "呜呜呜，家里淹了我不知道怎么办",
    "我一个老人家，腿脚不好，这可怎么办啊",
    "没人管我们老人了吗",
    "我急死了，孩子发烧家里还停电",
    "求求你们快点派人来吧",
    "我都快哭了，水一直往下流",
    "老伴走了以后就我一个人，灯坏了都没人帮我换，我一个老太婆怎么办",
    "真的没办法了，求你们帮帮我",
    "我好害怕，楼道里一直有人敲门",
    "我实在是撑不下去了",
    "我要崩溃了，楼上漏水漏了一个月",
    "活着真没意思，什么都没人管",
    "儿女都不在身边，我八十多了，实在弄不了",
    "吓死我了，刚才门口有个陌生人一直转",
    "急得我一晚上没睡",
    "我一个老头子爬不了楼，电梯坏了一个星期，我怎么买菜啊",
    "救救我们吧，家里一直没水",
    "哭都哭不出来了",
    "怎么办怎么办，水漫到客厅了",
    "我不想活了",
    "我真的太难了",
    # Speech-to-text from the hotline: no punctuation at all.
    "你们到底还管不管了我都打了四次电话了",
    "我一个孤老太婆腿又不好电梯停了我怎么下楼啊",
)

# Ordinary reports, questions and small talk: the bot answers, nobody is paged.
ORDINARY: tuple[str, ...] = (
    "水管漏了好几天了",
    "厨房水管漏了好几天了，麻烦派人来看看",
    "我要投诉楼上邻居，天天晚上跳绳很吵",
    "投诉一下楼下的狗一直叫",
    "我想投诉小区里乱停车的问题",
    "比较急，卫生间堵了，能不能今天来修",
    "有点急，家里停水了",
    "急事，钥匙锁在屋里了",
    "3号楼2单元楼道灯不亮",
    "电梯坏了",
    "电梯坏了好几天了，什么时候能修好",
    "你好",
    "谢谢你",
    "好的，再见",
    "转人工",
    "我要报修",
    "工单GD20261128-0007的进度怎么样了",
    "帮我查一下我的报修进度",
    "下水道堵了，味道很大",
    "楼上装修太吵了，中午都不让人休息",
    "外墙瓷砖掉了，怕砸到人",
    "小区门口的路灯坏了三天了",
    "垃圾桶满了，麻烦安排清理一下",
    "家里暖气不热",
    "暖气死活不热，能不能派人看看",
    "我家老人一个人在家，水龙头关不上",
    "我是独居老人，想申请上门服务",
    "请问老年卡怎么办理",
    "我不知道怎么办理居住证",
    "怎么交物业费",
    "物业费多少钱一平",
    "停车位怎么申请",
    "我想咨询一下社区养老服务",
    "明天上午有人在家，可以上门",
    "电话是13800000000",
    "5号楼1单元301",
    "不对，是7号楼",
    "对，没错",
    "不用了",
    "取消刚才的报修",
    "我补充一下，漏水的地方在卫生间顶上",
    "楼道里堆了很多杂物，消防通道被堵了",
    "邻居家的空调外机滴水到我家窗台",
    "楼下烧烤油烟很大，想投诉",
    "对面楼晚上广场舞音乐太响",
    "谢谢师傅，已经修好了",
    "修得很好，五星",
    "师傅态度很好，非常感谢",
    "我不着急，你们有空再来",
    "不急，下周来也行",
    "我没生气，就是问问什么时候来",
    "家里网络断了好几天了，是找你们吗",
    "楼顶漏水，下雨天就滴",
    "你们几点下班",
    "周末有人值班吗",
    "我腿脚不好，能不能上门收一下快递",
    "小孩把玩具扔到下水道了",
    "绿化带里有个马蜂窝",
    "单元门禁坏了，刷卡进不去",
    "有只流浪猫在车库里好几天了",
    "路面有个大坑，晚上看不清",
    "帮我叫个维修师傅",
    "今天能来吗？",
    "什么时候来修？",
    "啊？你说什么",
    "我打了一次电话，说让我在这儿报",
    "上次修的水龙头又坏了，麻烦再来一趟",
    "已经等了一天了，大概什么时候能到",
    "楼上的水管爆了，水一直往下流",
    "滚筒洗衣机排水管坏了",
    "操作不会，怎么上传照片",
    "垃圾分类的时间是几点",
    "废物回收站在哪里",
    "12345那边让我找社区登记",
    "帮我投诉一下乱扔垃圾的人",
    "我想表扬一下维修师傅",
    "家里马桶堵了，急用",
    "窗户关不上，风很大",
    "电梯按钮失灵了，老是停错层",
    "我妈八十多了，想问问有没有助餐服务",
    "楼上小孩天天哭闹，很吵",
    "晚上路灯不亮，老人走路害怕摔跤",
    "有人上门推销保健品，专门忽悠老人",
    "我的USB充电桩坏了",
    "燃气灶打不着火了",
    # Speech-to-text from the hotline: no punctuation at all.
    "我家厨房的水管漏了好几天了你们派个人来看看",
    "我想投诉一下隔壁装修噪音太大了",
)

MIN_PRECISION = 0.95
MIN_RECALL = 0.85


def measure() -> tuple[float, float, list[str], list[str]]:
    """Precision and recall over the labelled sets; the misses and false alarms."""
    missed = [text for text in UPSET if detect_distress(text) is None]
    false_alarms = [text for text in ORDINARY if detect_distress(text) is not None]
    true_positives = len(UPSET) - len(missed)
    fired = true_positives + len(false_alarms)
    precision = true_positives / fired if fired else 0.0
    recall = true_positives / len(UPSET)
    return precision, recall, missed, false_alarms


def test_the_evaluation_set_is_big_enough_and_has_no_overlap() -> None:
    assert len(UPSET) >= 40 and len(ORDINARY) >= 60
    assert not set(UPSET) & set(ORDINARY)
    assert len(set(UPSET)) == len(UPSET) and len(set(ORDINARY)) == len(ORDINARY)


def test_precision_and_recall_on_the_labelled_set() -> None:
    precision, recall, missed, false_alarms = measure()
    assert precision >= MIN_PRECISION, f"precision {precision:.3f}; false alarms: {false_alarms}"
    assert recall >= MIN_RECALL, f"recall {recall:.3f}; missed: {missed}"


@pytest.mark.parametrize(("text", "kind"), [
    ("气死我了", "anger"),
    ("什么破服务", "anger"),
    ("我要投诉你们", "anger"),
    ("我去12345投诉", "anger"),
    ("打了三次电话都没人管", "anger"),
    ("三天了还没人来", "anger"),
    ("怎么还不来？？？", "anger"),
    ("快点！！！", "anger"),
    ("你们这帮王八蛋", "anger"),
    ("呜呜呜", "distress"),
    ("我一个老人家怎么办", "distress"),
    ("没人管我们", "distress"),
    ("我都急哭了", "distress"),
])
def test_cues_named_in_the_brief_fire_with_their_kind(text: str, kind: str) -> None:
    signal = detect_distress(text)
    assert signal is not None, text
    assert signal.kind == kind
    assert signal.cue and signal.cue in text.replace("！", "!").replace("？", "?")


@pytest.mark.parametrize("text", [
    "水管漏了好几天了",
    "我要投诉楼上噪音",
    "我不是投诉你们，就是问问",
    "不急",
    "请问老年卡怎么办理",
    "",
    "   ",
    "？",
    "!!",
])
def test_ordinary_words_alone_do_not_fire(text: str) -> None:
    assert detect_distress(text) is None


def test_full_width_and_spaced_punctuation_count_as_one_run() -> None:
    assert detect_distress("人呢？ ？ ？") == DistressSignal(kind="anger", cue="???")


def test_a_long_message_is_searched_whole_and_fast() -> None:
    text = "楼道灯不亮。" * 2000 + "太过分了"
    signal = detect_distress(text)
    assert signal is not None and signal.cue == "太过分"
