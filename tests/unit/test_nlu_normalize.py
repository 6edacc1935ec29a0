"""Table-driven tests for nlu.normalize."""

from __future__ import annotations

import pytest

from nlu.normalize import chinese_to_arabic, extract_digits, normalize

# (input, expected) — numbers of addresses, rooms, floors, phones and clock times.
CONVERTED: list[tuple[str, str]] = [
    # The brief's required cases.
    ("三号楼二单元五零一", "3号楼2单元501"),
    ("十二栋一八零二", "12栋1802"),
    ("幺幺号楼", "11号楼"),
    ("幺三八零零一二三四五六", "13800123456"),
    ("二十三层", "23层"),
    ("两单元", "2单元"),
    ("一千八百零二室", "1802室"),
    ("下午三点半", "下午3点半"),
    ("七号楼", "7号楼"),
    # Buildings, units, rooms, floors.
    ("两号楼", "2号楼"),
    ("三十号楼", "30号楼"),
    ("九栋", "9栋"),
    ("六幢", "6幢"),
    ("第三单元", "第3单元"),
    ("三单元一楼", "3单元1楼"),
    ("一楼大厅", "1楼大厅"),
    ("十楼", "10楼"),
    ("十八楼", "18楼"),
    ("二十一楼", "21楼"),
    ("地下一层", "地下1层"),
    ("两层楼", "2层楼"),
    ("二十多层", "20多层"),
    ("五零一室", "501室"),
    ("一百零一室", "101室"),
    ("十二号楼一单元一零二", "12号楼1单元102"),
    ("五号楼二单元的电梯", "5号楼2单元的电梯"),
    ("二期三号楼", "2期3号楼"),
    ("三区五号楼", "3区5号楼"),
    ("幺幺栋", "11栋"),
    ("洞幺号", "01号"),
    ("3号楼二单元", "3号楼2单元"),
    ("三号楼2单元501", "3号楼2单元501"),
    ("五零一一直漏水", "501一直漏水"),
    ("万一三号楼着火了", "万一3号楼着火了"),
    ("同一单元三楼", "同一单元3楼"),
    # Phone and service numbers spoken digit by digit.
    ("一三九一二三四五六七八", "13912345678"),
    ("幺三八 零零一二 三四五六", "138 0012 3456"),
    ("洞幺零 八八八八 六六六六", "010 8888 6666"),
    ("打一二零", "打120"),
    ("打幺幺零报警", "打110报警"),
    ("快打一一九", "快打119"),
    ("电话是幺八六幺二三四五六七八", "电话是18612345678"),
    # Clock times and dates.
    ("晚上七点以后", "晚上7点以后"),
    ("明天上午九点", "明天上午9点"),
    ("三点十分", "3点10分"),
    ("三点零五分", "3点05分"),
    ("三点零五", "3点05"),
    ("三点二十来", "3点20来"),
    ("十二点整", "12点整"),
    ("凌晨两点", "凌晨2点"),
    ("半夜十二点还在装修", "半夜12点还在装修"),
    ("下午一点", "下午1点"),
    ("一点半", "1点半"),
    ("一点钟", "1点钟"),
    ("一点以后", "1点以后"),
    ("七点到九点", "7点到9点"),
    ("下午两点到四点", "下午2点到4点"),
    ("九点左右", "9点左右"),
    ("十一点多", "11点多"),
    ("两点来", "2点来"),
    ("周六三点", "周六3点"),
    ("星期天下午两点", "星期天下午2点"),
    ("星期三三点", "星期三3点"),
    ("十一月三号", "11月3号"),
    ("11月三日", "11月3日"),
    ("十二月二十五号上午", "12月25号上午"),
    # Width, control characters, whitespace.
    ("３号楼５０１", "3号楼501"),
    ("ＡＢＣ１２３", "ABC123"),
    ("你好，请问？", "你好,请问?"),
    ("电梯\u3000坏了", "电梯 坏了"),
    ("a\tb\nc", "a b c"),
    ("第一行\r\n第二行", "第一行 第二行"),
    ("  前后空格  ", "前后空格"),
    ("多个   空格", "多个 空格"),
    ("零\u200b宽", "零宽"),
    ("电梯\x00坏了\x07", "电梯坏了"),
    ("⑤号楼", "5号楼"),
    # Found in the training data.
    ("幺七号楼三单元402", "17号楼3单元402"),
    ("京A幺二三四五", "京A12345"),
    ("十八号楼一层", "18号楼1层"),
    ("都十一月十五号了", "都11月15号了"),
    ("三点了还在吵", "3点了还在吵"),
]

# Sentences whose numeral characters are words, counts or idioms: must not change.
UNCHANGED: list[str] = [
    "我一直在家",
    "一下子",
    "稍微等一下",
    "一点也不热",
    "一点儿都不热",
    "晚上一点也不安静",
    "一点点",
    "差一点到家",
    "快一点",
    "有一点冷",
    "早一点来",
    "我有两点要说",
    "两点建议",
    "第一点",
    "一起去",
    "一样的",
    "万一漏水怎么办",
    "统一收费",
    "唯一的办法",
    "第一次",
    "一会儿就来",
    "一些垃圾",
    "一般般",
    "一定要来",
    "一共三次",
    "一切正常",
    "一边走一边说",
    "一旦下雨就漏",
    "一天到晚吵",
    "一模一样",
    "三三两两",
    "七七八八",
    "乱七八糟",
    "一五一十地说",
    "八九不离十",
    "十分感谢",
    "千万别来",
    "百分之百",
    "一层灰",
    "地上一层水",
    "一层一层的",
    "厚厚一层",
    "烧开了壶底一层白",
    "顶层加盖了一层",
    "院子里盖了两层小楼",
    "电梯停在两层中间了",
    "就是东门进来第一栋",
    "一楼道都是烟",
    "一楼梯的垃圾",
    "三四个人",
    "三四五个人",
    "五六天了",
    "两三天",
    "停水两天了",
    "一次",
    "一个人",
    "一家人",
    "一辈子",
    "十几年了",
    "几号楼",
    "好几个",
    "一百个放心",
    "一日三餐",
    "三十分钟",
    "十五分钟",
    "一刻也不停",
    "一清二楚",
    "独一无二",
    "说一不二",
    "三番五次",
    "七上八下",
    "五颜六色",
    "十全十美",
    "一举两得",
    "一心一意",
    "零下五度",
    "零钱",
    "墙上有个洞",
    "漏洞百出",
    "幺蛾子",
    "二手房",
    "周一到周五",
    "星期一下午",
    "礼拜六",
    "一万",
    "半个小时",
    "二零二四年",
    "",
    "电梯坏了",
    "/greet",
]

DIGITS: list[tuple[str, int | None]] = [
    ("一", 1),
    ("十", 10),
    ("十二", 12),
    ("二十", 20),
    ("二十三", 23),
    ("一百", 100),
    ("一百零一", 101),
    ("一百一十", 110),
    ("三百五", 350),
    ("一千八", 1800),
    ("一千八百零二", 1802),
    ("两千", 2000),
    ("两万五", 25000),
    ("一万零一", 10001),
    ("一五一十", None),
    ("十百", None),
    ("万一", None),
    ("千万", None),
    ("洞十", None),
    ("abc", None),
    ("", None),
]


@pytest.mark.parametrize(("text", "expected"), CONVERTED)
def test_normalize_converts(text: str, expected: str) -> None:
    assert normalize(text) == expected


@pytest.mark.parametrize("text", UNCHANGED)
def test_normalize_keeps_words(text: str) -> None:
    assert normalize(text) == text


@pytest.mark.parametrize("text", [t for t, _ in CONVERTED] + UNCHANGED)
def test_normalize_is_idempotent(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once


@pytest.mark.parametrize(("run", "value"), DIGITS)
def test_chinese_to_arabic_positional(run: str, value: int | None) -> None:
    assert chinese_to_arabic(run) == (None if value is None else str(value))


@pytest.mark.parametrize(
    ("run", "digits"),
    [("五零一", "501"), ("幺洞洞", "100"), ("两", "2"), ("〇", "0"), ("幺三八", "138")],
)
def test_chinese_to_arabic_digit_by_digit(run: str, digits: str) -> None:
    assert chinese_to_arabic(run) == digits


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        ("我电话是幺三八零零一二三四五六", "13800123456"),
        ("138-0012-3456", "13800123456"),
        ("三号楼二单元五零一", "32501"),
        ("我一直在家", ""),
    ],
)
def test_extract_digits(text: str, digits: str) -> None:
    assert extract_digits(text) == digits
