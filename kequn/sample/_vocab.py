"""The word lists and weights the sample generator draws from.

Plain data, no logic. Weights are relative (they need not sum to 1). Every Chinese string here
is encodable in GBK, because ``customers.csv`` is written in GBK.
"""

from __future__ import annotations

# (character(s), pinyin, relative frequency in %) — the common Chinese surnames, with rough
# frequencies from the 2020 census; a few compound surnames at the tail.
SURNAMES: list[tuple[str, str, float]] = [
    ("王", "wang", 7.1), ("李", "li", 7.0), ("张", "zhang", 6.6), ("刘", "liu", 5.4),
    ("陈", "chen", 4.5), ("杨", "yang", 3.1), ("黄", "huang", 2.2), ("赵", "zhao", 2.0),
    ("吴", "wu", 2.0), ("周", "zhou", 1.9), ("徐", "xu", 1.3), ("孙", "sun", 1.3),
    ("马", "ma", 1.2), ("朱", "zhu", 1.2), ("胡", "hu", 1.1), ("郭", "guo", 1.1),
    ("何", "he", 1.0), ("林", "lin", 1.0), ("高", "gao", 1.0), ("罗", "luo", 0.9),
    ("郑", "zheng", 0.8), ("梁", "liang", 0.8), ("谢", "xie", 0.7), ("宋", "song", 0.6),
    ("唐", "tang", 0.6), ("许", "xu", 0.6), ("韩", "han", 0.6), ("邓", "deng", 0.5),
    ("冯", "feng", 0.5), ("曹", "cao", 0.5), ("彭", "peng", 0.5), ("曾", "zeng", 0.5),
    ("肖", "xiao", 0.5), ("田", "tian", 0.4), ("董", "dong", 0.4), ("潘", "pan", 0.4),
    ("袁", "yuan", 0.4), ("蔡", "cai", 0.4), ("蒋", "jiang", 0.4), ("余", "yu", 0.4),
    ("于", "yu", 0.4), ("杜", "du", 0.4), ("叶", "ye", 0.4), ("程", "cheng", 0.4),
    ("魏", "wei", 0.3), ("苏", "su", 0.3), ("吕", "lv", 0.3), ("丁", "ding", 0.3),
    ("任", "ren", 0.3), ("卢", "lu", 0.3), ("沈", "shen", 0.3), ("姚", "yao", 0.3),
    ("钟", "zhong", 0.3), ("姜", "jiang", 0.3), ("崔", "cui", 0.3), ("谭", "tan", 0.3),
    ("陆", "lu", 0.3), ("范", "fan", 0.3), ("汪", "wang", 0.3), ("廖", "liao", 0.3),
    ("石", "shi", 0.3), ("金", "jin", 0.3), ("韦", "wei", 0.3), ("贾", "jia", 0.2),
    ("夏", "xia", 0.2), ("付", "fu", 0.2), ("方", "fang", 0.2), ("邹", "zou", 0.2),
    ("熊", "xiong", 0.2), ("白", "bai", 0.2), ("孟", "meng", 0.2), ("秦", "qin", 0.2),
    ("邱", "qiu", 0.2), ("侯", "hou", 0.2), ("江", "jiang", 0.2), ("尹", "yin", 0.2),
    ("薛", "xue", 0.2), ("闫", "yan", 0.2), ("段", "duan", 0.2), ("雷", "lei", 0.2),
    ("龙", "long", 0.2), ("黎", "li", 0.2), ("史", "shi", 0.2), ("陶", "tao", 0.2),
    ("贺", "he", 0.2), ("毛", "mao", 0.2), ("郝", "hao", 0.2), ("顾", "gu", 0.2),
    ("龚", "gong", 0.2), ("邵", "shao", 0.2), ("万", "wan", 0.2), ("钱", "qian", 0.2),
    ("武", "wu", 0.2), ("戴", "dai", 0.2), ("严", "yan", 0.2), ("覃", "qin", 0.1),
    ("欧阳", "ouyang", 0.05), ("上官", "shangguan", 0.01), ("司马", "sima", 0.01),
    ("诸葛", "zhuge", 0.01),
]  # fmt: skip

# Given-name characters with their pinyin; a given name is one or two of them.
GIVEN_MALE: list[tuple[str, str]] = [
    ("伟", "wei"), ("强", "qiang"), ("磊", "lei"), ("军", "jun"), ("勇", "yong"), ("杰", "jie"),
    ("涛", "tao"), ("斌", "bin"), ("浩", "hao"), ("鹏", "peng"), ("俊", "jun"), ("峰", "feng"),
    ("超", "chao"), ("明", "ming"), ("刚", "gang"), ("平", "ping"), ("辉", "hui"), ("鑫", "xin"),
    ("宇", "yu"), ("博", "bo"), ("晨", "chen"), ("轩", "xuan"), ("子", "zi"), ("文", "wen"),
    ("建", "jian"), ("国", "guo"), ("华", "hua"), ("志", "zhi"), ("海", "hai"), ("东", "dong"),
    ("林", "lin"), ("亮", "liang"), ("毅", "yi"), ("凯", "kai"), ("航", "hang"), ("泽", "ze"),
    ("睿", "rui"), ("然", "ran"), ("天", "tian"), ("铭", "ming"), ("嘉", "jia"), ("昊", "hao"),
    ("一", "yi"), ("阳", "yang"), ("成", "cheng"), ("思", "si"), ("远", "yuan"), ("安", "an"),
]  # fmt: skip
GIVEN_FEMALE: list[tuple[str, str]] = [
    ("芳", "fang"), ("娜", "na"), ("敏", "min"), ("静", "jing"), ("丽", "li"), ("艳", "yan"),
    ("娟", "juan"), ("霞", "xia"), ("燕", "yan"), ("玲", "ling"), ("婷", "ting"), ("雪", "xue"),
    ("琳", "lin"), ("欣", "xin"), ("怡", "yi"), ("佳", "jia"), ("颖", "ying"), ("倩", "qian"),
    ("萍", "ping"), ("梅", "mei"), ("晶", "jing"), ("慧", "hui"), ("悦", "yue"), ("彤", "tong"),
    ("诗", "shi"), ("涵", "han"), ("梓", "zi"), ("萱", "xuan"), ("雨", "yu"), ("思", "si"),
    ("嘉", "jia"), ("可", "ke"), ("馨", "xin"), ("月", "yue"), ("晓", "xiao"), ("秀", "xiu"),
    ("英", "ying"), ("红", "hong"), ("洁", "jie"), ("丹", "dan"), ("露", "lu"), ("瑶", "yao"),
    ("琪", "qi"), ("璐", "lu"), ("菲", "fei"), ("云", "yun"), ("清", "qing"), ("安", "an"),
]  # fmt: skip

ENGLISH_MALE = [
    "James", "David", "Michael", "Kevin", "Jason", "Eric", "Tony", "Jack", "Leo", "Peter",
    "Andy", "Frank", "Henry", "Vincent", "Steven", "Allen", "Ryan", "Daniel", "Alex", "Sam",
]  # fmt: skip
ENGLISH_FEMALE = [
    "Amy", "Linda", "Grace", "Lily", "Cindy", "Emma", "Alice", "Coco", "Vivian", "Cherry",
    "Helen", "Jenny", "Sophia", "Anna", "Nancy", "Iris", "Tina", "Wendy", "Fiona", "Sally",
]  # fmt: skip

# (city, province, weight): weight is roughly the urban population in millions.
CITIES: list[tuple[str, str, float]] = [
    ("上海", "上海市", 24.9), ("北京", "北京市", 21.9), ("深圳", "广东省", 17.6),
    ("广州", "广东省", 18.7), ("成都", "四川省", 21.0), ("重庆", "重庆市", 16.0),
    ("天津", "天津市", 13.9), ("武汉", "湖北省", 13.6), ("杭州", "浙江省", 12.2),
    ("西安", "陕西省", 12.9), ("苏州", "江苏省", 12.9), ("郑州", "河南省", 12.8),
    ("南京", "江苏省", 9.4), ("长沙", "湖南省", 10.4), ("东莞", "广东省", 10.5),
    ("青岛", "山东省", 10.3), ("石家庄", "河北省", 11.2), ("哈尔滨", "黑龙江省", 9.9),
    ("温州", "浙江省", 9.7), ("宁波", "浙江省", 9.6), ("合肥", "安徽省", 9.6),
    ("佛山", "广东省", 9.6), ("济南", "山东省", 9.4), ("沈阳", "辽宁省", 9.1),
    ("长春", "吉林省", 9.1), ("南宁", "广西壮族自治区", 8.9), ("昆明", "云南省", 8.5),
    ("福州", "福建省", 8.4), ("大连", "辽宁省", 7.5), ("无锡", "江苏省", 7.5),
    ("南昌", "江西省", 6.5), ("贵阳", "贵州省", 6.2), ("太原", "山西省", 5.4),
    ("厦门", "福建省", 5.3), ("兰州", "甘肃省", 4.4), ("乌鲁木齐", "新疆维吾尔自治区", 4.1),
    ("呼和浩特", "内蒙古自治区", 3.5), ("海口", "海南省", 2.9), ("银川", "宁夏回族自治区", 2.9),
    ("西宁", "青海省", 2.5), ("拉萨", "西藏自治区", 0.9),
]  # fmt: skip

GENDERS: list[tuple[str, float]] = [("女", 0.55), ("男", 0.45)]

# (band, weight, youngest age, oldest age)
AGE_BANDS: list[tuple[str, float, int, int]] = [
    ("18-24", 0.18, 18, 24),
    ("25-34", 0.36, 25, 34),
    ("35-44", 0.24, 35, 44),
    ("45-54", 0.14, 45, 54),
    ("55+", 0.08, 55, 70),
]

CHANNELS: list[tuple[str, float]] = [
    ("微信小程序", 0.28),
    ("天猫", 0.22),
    ("京东", 0.16),
    ("抖音", 0.14),
    ("线下门店", 0.12),
    ("官网", 0.08),
]

# (domain, weight); qq.com addresses use the numeric QQ number as the local part.
EMAIL_DOMAINS: list[tuple[str, float]] = [
    ("qq.com", 0.40), ("163.com", 0.20), ("126.com", 0.08), ("gmail.com", 0.07),
    ("outlook.com", 0.06), ("sina.com", 0.06), ("foxmail.com", 0.05), ("hotmail.com", 0.04),
    ("139.com", 0.04),
]  # fmt: skip

# Three-digit prefixes of Chinese mobile numbers (China Mobile, Unicom, Telecom, Broadnet).
MOBILE_PREFIXES = [
    134, 135, 136, 137, 138, 139, 147, 150, 151, 152, 157, 158, 159, 172, 178, 182, 183, 184,
    187, 188, 195, 197, 198, 130, 131, 132, 145, 155, 156, 166, 175, 176, 185, 186, 196, 133,
    149, 153, 173, 177, 180, 181, 189, 190, 191, 193, 199, 192,
]  # fmt: skip

# (category, median price in yuan, price spread (lognormal sigma), popularity, items)
CATEGORIES: list[tuple[str, float, float, float, list[str]]] = [
    ("服饰", 169.0, 0.5, 0.22,
     ["T恤", "连衣裙", "牛仔裤", "卫衣", "羽绒服", "衬衫", "运动鞋", "帆布鞋", "针织衫", "风衣"]),
    ("美妆", 199.0, 0.6, 0.18,
     ["保湿面霜", "精华液", "口红", "防晒霜", "洗面奶", "面膜", "粉底液", "眼霜", "卸妆水",
      "香水"]),
    ("数码", 299.0, 0.9, 0.12,
     ["蓝牙耳机", "充电宝", "智能手表", "数据线", "机械键盘", "无线鼠标", "平板电脑", "手机壳",
      "移动硬盘", "智能音箱"]),
    ("家居", 89.0, 0.6, 0.14,
     ["四件套", "保温杯", "收纳箱", "香薰蜡烛", "乳胶枕", "毛巾", "拖鞋", "台灯", "餐具套装",
      "抱枕"]),
    ("食品", 45.0, 0.5, 0.16,
     ["坚果礼盒", "挂耳咖啡", "绿茶", "牛肉干", "螺蛳粉", "酸奶", "燕麦片", "巧克力", "月饼礼盒",
      "蜂蜜"]),
    ("母婴", 139.0, 0.7, 0.08,
     ["纸尿裤", "婴儿奶粉", "湿巾", "奶瓶", "儿童绘本", "婴儿推车", "玩具积木", "儿童水杯"]),
    ("运动户外", 159.0, 0.7, 0.06,
     ["瑜伽垫", "跑步鞋", "登山包", "运动水壶", "哑铃", "帐篷", "速干T恤", "骑行手套"]),
    ("图书", 49.0, 0.4, 0.04,
     ["小说", "历史读物", "编程入门", "英语词汇", "儿童百科", "漫画", "经济学原理", "散文集"]),
]  # fmt: skip

VARIANTS = ["经典款", "升级款", "礼盒装", "黑色", "白色", "大号", "小号", "2件装", "限定版"]

# Search queries typed by shoppers, per category (events of type ``search``).
SEARCH_QUERIES: dict[str, list[str]] = {
    "服饰": ["连衣裙", "卫衣 女", "羽绒服 轻薄", "牛仔裤 直筒"],
    "美妆": ["面霜", "口红 正品", "防晒", "面膜 补水"],
    "数码": ["蓝牙耳机 降噪", "充电宝", "机械键盘", "智能手表"],
    "家居": ["四件套 纯棉", "保温杯", "收纳", "台灯 护眼"],
    "食品": ["坚果", "咖啡", "螺蛳粉", "零食 大礼包"],
    "母婴": ["纸尿裤", "奶粉", "绘本", "积木"],
    "运动户外": ["瑜伽垫", "跑步鞋", "帐篷", "登山包"],
    "图书": ["小说 推荐", "编程", "英语", "漫画"],
}

PAGES = ["/", "/home", "/member", "/cart", "/promo/618", "/promo/double11", "/new-arrivals"]

SUPPORT_TOPICS = ["物流", "退换货", "发票", "商品质量", "售后", "优惠券"]
REFERRAL_CHANNELS = ["微信好友", "朋友圈", "QQ", "小红书", "抖音"]

# (level, points at least)
MEMBER_LEVELS: list[tuple[str, int]] = [
    ("普通会员", 0),
    ("银卡会员", 1000),
    ("金卡会员", 3000),
    ("钻石会员", 8000),
]

# Spring Festival (Chinese New Year's Day) by year; the dip in orders centres on it.
SPRING_FESTIVAL = {
    2015: "2015-02-19", 2016: "2016-02-08", 2017: "2017-01-28", 2018: "2018-02-16",
    2019: "2019-02-05", 2020: "2020-01-25", 2021: "2021-02-12", 2022: "2022-02-01",
    2023: "2023-01-22", 2024: "2024-02-10", 2025: "2025-01-29", 2026: "2026-02-17",
    2027: "2027-02-06", 2028: "2028-01-26", 2029: "2029-02-13", 2030: "2030-02-03",
}  # fmt: skip

# Relative order volume by hour of day (0-23): quiet at night, peaks late morning and evening.
HOURS = [3.0, 1.5, 0.8, 0.5, 0.4, 0.5, 1.0, 2.0, 3.5, 4.5, 5.5, 6.0,
         5.5, 5.0, 5.0, 5.0, 5.0, 5.0, 5.5, 6.5, 8.0, 9.0, 8.0, 5.5]  # fmt: skip
# On Double 11 the rush starts at midnight.
HOURS_DOUBLE11 = [30.0, 12.0, 3.0, 1.0, 0.5, 0.5, 1.0, 2.0, 3.5, 4.5, 5.5, 6.0,
                  5.5, 5.0, 5.0, 5.0, 5.0, 5.0, 5.5, 6.5, 9.0, 11.0, 12.0, 10.0]  # fmt: skip
# Relative volume by weekday, Monday first.
WEEKDAYS = [0.95, 0.93, 0.95, 0.97, 1.02, 1.10, 1.08]
