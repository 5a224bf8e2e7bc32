"""City names: one canonical spelling per city, so a card saying 深圳 matches a Shenzhen alert.

careflow stores and matches cities in their **canonical form**: the Chinese name without the
市 suffix for the cities in ``CHINESE_CITIES`` (深圳, not "Shenzhen", "shenzhen" or 深圳市),
and for any other name its own text tidied (Unicode NFKC, whitespace collapsed, Latin words
capitalised: "los  angeles" -> "Los Angeles"; a Chinese name loses a trailing 市). Chinese
is the canonical form because pinyin is ambiguous (苏州 and 宿州 are both "Suzhou"): a
pinyin name that fits two cities in the table is left as written, never guessed.

Customer cards (at import, and again before each weather look-up), alerts and the
``[plugins.weather] cities`` setting all go through ``canonical_city``.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from careflow.storage.models import Customer

log = logging.getLogger(__name__)

# The customers.city column: a longer name cannot be stored.
MAX_LENGTH = 100
# What may follow a city's name and is not part of it: 深圳市, "Shenzhen City", "Shenzhen Shi".
_SUFFIXES = ("市", "city", "shi")

# One city a line: Chinese name | English name | other spellings (pinyin, old romanisations,
# traditional characters). Pinyin is written with apostrophes where the syllables need them;
# lookups ignore case, spaces, apostrophes, hyphens and tone marks. "[...]" lines name the
# province of the cities below them. Municipalities, special administrative regions, every
# provincial capital, every prefecture-level city, and the larger county-level cities that
# customers give as their city.
CHINESE_CITIES = """
[直辖市 Municipalities]
北京 | Beijing | Peking | 北京市
上海 | Shanghai
天津 | Tianjin | Tientsin
重庆 | Chongqing | Chungking | 重慶
[特别行政区 SARs]
香港 | Hong Kong | Xianggang | Hongkong | 香港特别行政区 | 香港特別行政區
澳门 | Macau | Macao | Aomen | 澳門 | 澳门特别行政区
[台湾 Taiwan]
台北 | Taipei | 臺北 | Taibei
台中 | Taichung | 臺中 | Taizhong
台南 | Tainan | 臺南
高雄 | Kaohsiung | Gaoxiong
[河北 Hebei]
石家庄 | Shijiazhuang
唐山 | Tangshan
秦皇岛 | Qinhuangdao
邯郸 | Handan
邢台 | Xingtai
保定 | Baoding
张家口 | Zhangjiakou
承德 | Chengde
沧州 | Cangzhou
廊坊 | Langfang
衡水 | Hengshui
[山西 Shanxi]
太原 | Taiyuan
大同 | Datong
阳泉 | Yangquan
长治 | Changzhi
晋城 | Jincheng
朔州 | Shuozhou
晋中 | Jinzhong
运城 | Yuncheng
忻州 | Xinzhou
临汾 | Linfen
吕梁 | Lüliang | Lvliang | Lyuliang
[内蒙古 Inner Mongolia]
呼和浩特 | Hohhot | Huhehaote
包头 | Baotou
乌海 | Wuhai
赤峰 | Chifeng
通辽 | Tongliao
鄂尔多斯 | Ordos | E'erduosi
呼伦贝尔 | Hulunbuir | Hulunbei'er
巴彦淖尔 | Bayannur | Bayannao'er
乌兰察布 | Ulanqab | Wulanchabu
[辽宁 Liaoning]
沈阳 | Shenyang | Mukden
大连 | Dalian
鞍山 | Anshan
抚顺 | Fushun
本溪 | Benxi
丹东 | Dandong
锦州 | Jinzhou
营口 | Yingkou
阜新 | Fuxin
辽阳 | Liaoyang
盘锦 | Panjin
铁岭 | Tieling
朝阳 | Chaoyang
葫芦岛 | Huludao
[吉林 Jilin]
长春 | Changchun
吉林 | Jilin
四平 | Siping
辽源 | Liaoyuan
通化 | Tonghua
白山 | Baishan
松原 | Songyuan
白城 | Baicheng
延吉 | Yanji
[黑龙江 Heilongjiang]
哈尔滨 | Harbin | Ha'erbin
齐齐哈尔 | Qiqihar | Qiqiha'er
鸡西 | Jixi
鹤岗 | Hegang
双鸭山 | Shuangyashan
大庆 | Daqing
伊春 | Yichun
佳木斯 | Jiamusi
七台河 | Qitaihe
牡丹江 | Mudanjiang
黑河 | Heihe
绥化 | Suihua
[江苏 Jiangsu]
南京 | Nanjing | Nanking
无锡 | Wuxi
徐州 | Xuzhou
常州 | Changzhou
苏州 | Suzhou
南通 | Nantong
连云港 | Lianyungang
淮安 | Huai'an
盐城 | Yancheng
扬州 | Yangzhou
镇江 | Zhenjiang
泰州 | Taizhou
宿迁 | Suqian
昆山 | Kunshan
江阴 | Jiangyin
[浙江 Zhejiang]
杭州 | Hangzhou
宁波 | Ningbo
温州 | Wenzhou
嘉兴 | Jiaxing
湖州 | Huzhou
绍兴 | Shaoxing
金华 | Jinhua
衢州 | Quzhou
舟山 | Zhoushan
台州 | Taizhou
丽水 | Lishui
义乌 | Yiwu
[安徽 Anhui]
合肥 | Hefei
芜湖 | Wuhu
蚌埠 | Bengbu
淮南 | Huainan
马鞍山 | Ma'anshan
淮北 | Huaibei
铜陵 | Tongling
安庆 | Anqing
黄山 | Huangshan
滁州 | Chuzhou
阜阳 | Fuyang
宿州 | Suzhou
六安 | Lu'an
亳州 | Bozhou
池州 | Chizhou
宣城 | Xuancheng
[福建 Fujian]
福州 | Fuzhou
厦门 | Xiamen | Amoy | 廈門
莆田 | Putian
三明 | Sanming
泉州 | Quanzhou
漳州 | Zhangzhou
南平 | Nanping
龙岩 | Longyan
宁德 | Ningde
晋江 | Jinjiang
[江西 Jiangxi]
南昌 | Nanchang
景德镇 | Jingdezhen
萍乡 | Pingxiang
九江 | Jiujiang
新余 | Xinyu
鹰潭 | Yingtan
赣州 | Ganzhou
吉安 | Ji'an
宜春 | Yichun
抚州 | Fuzhou
上饶 | Shangrao
[山东 Shandong]
济南 | Jinan
青岛 | Qingdao | Tsingtao
淄博 | Zibo
枣庄 | Zaozhuang
东营 | Dongying
烟台 | Yantai
潍坊 | Weifang
济宁 | Jining
泰安 | Tai'an
威海 | Weihai
日照 | Rizhao
临沂 | Linyi
德州 | Dezhou
聊城 | Liaocheng
滨州 | Binzhou
菏泽 | Heze
[河南 Henan]
郑州 | Zhengzhou
开封 | Kaifeng
洛阳 | Luoyang
平顶山 | Pingdingshan
安阳 | Anyang
鹤壁 | Hebi
新乡 | Xinxiang
焦作 | Jiaozuo
濮阳 | Puyang
许昌 | Xuchang
漯河 | Luohe
三门峡 | Sanmenxia
南阳 | Nanyang
商丘 | Shangqiu
信阳 | Xinyang
周口 | Zhoukou
驻马店 | Zhumadian
济源 | Jiyuan
[湖北 Hubei]
武汉 | Wuhan
黄石 | Huangshi
十堰 | Shiyan
宜昌 | Yichang
襄阳 | Xiangyang
鄂州 | Ezhou
荆门 | Jingmen
孝感 | Xiaogan
荆州 | Jingzhou
黄冈 | Huanggang
咸宁 | Xianning
随州 | Suizhou
恩施 | Enshi
仙桃 | Xiantao
潜江 | Qianjiang
天门 | Tianmen
[湖南 Hunan]
长沙 | Changsha
株洲 | Zhuzhou
湘潭 | Xiangtan
衡阳 | Hengyang
邵阳 | Shaoyang
岳阳 | Yueyang
常德 | Changde
张家界 | Zhangjiajie
益阳 | Yiyang
郴州 | Chenzhou
永州 | Yongzhou
怀化 | Huaihua
娄底 | Loudi
吉首 | Jishou
[广东 Guangdong]
广州 | Guangzhou | Canton | 廣州
韶关 | Shaoguan
深圳 | Shenzhen
珠海 | Zhuhai
汕头 | Shantou | Swatow
佛山 | Foshan
江门 | Jiangmen
湛江 | Zhanjiang
茂名 | Maoming
肇庆 | Zhaoqing
惠州 | Huizhou
梅州 | Meizhou
汕尾 | Shanwei
河源 | Heyuan
阳江 | Yangjiang
清远 | Qingyuan
东莞 | Dongguan | 東莞
中山 | Zhongshan
潮州 | Chaozhou
揭阳 | Jieyang
云浮 | Yunfu
[广西 Guangxi]
南宁 | Nanning
柳州 | Liuzhou
桂林 | Guilin
梧州 | Wuzhou
北海 | Beihai
防城港 | Fangchenggang
钦州 | Qinzhou
贵港 | Guigang
玉林 | Yulin
百色 | Baise
贺州 | Hezhou
河池 | Hechi
来宾 | Laibin
崇左 | Chongzuo
[海南 Hainan]
海口 | Haikou
三亚 | Sanya
三沙 | Sansha
儋州 | Danzhou
[四川 Sichuan]
成都 | Chengdu
自贡 | Zigong
攀枝花 | Panzhihua
泸州 | Luzhou
德阳 | Deyang
绵阳 | Mianyang
广元 | Guangyuan
遂宁 | Suining
内江 | Neijiang
乐山 | Leshan
南充 | Nanchong
眉山 | Meishan
宜宾 | Yibin
广安 | Guang'an
达州 | Dazhou
雅安 | Ya'an
巴中 | Bazhong
资阳 | Ziyang
西昌 | Xichang
[贵州 Guizhou]
贵阳 | Guiyang
六盘水 | Liupanshui
遵义 | Zunyi
安顺 | Anshun
毕节 | Bijie
铜仁 | Tongren
凯里 | Kaili
都匀 | Duyun
兴义 | Xingyi
[云南 Yunnan]
昆明 | Kunming
曲靖 | Qujing
玉溪 | Yuxi
保山 | Baoshan
昭通 | Zhaotong
丽江 | Lijiang
普洱 | Pu'er
临沧 | Lincang
大理 | Dali
楚雄 | Chuxiong
蒙自 | Mengzi
景洪 | Jinghong
[西藏 Tibet]
拉萨 | Lhasa | Lasa
日喀则 | Shigatse | Rikaze
昌都 | Qamdo | Changdu
林芝 | Nyingchi | Linzhi
山南 | Shannan
那曲 | Nagqu | Naqu
[陕西 Shaanxi]
西安 | Xi'an | Sian
铜川 | Tongchuan
宝鸡 | Baoji
咸阳 | Xianyang
渭南 | Weinan
延安 | Yan'an
汉中 | Hanzhong
榆林 | Yulin
安康 | Ankang
商洛 | Shangluo
[甘肃 Gansu]
兰州 | Lanzhou
嘉峪关 | Jiayuguan
金昌 | Jinchang
白银 | Baiyin
天水 | Tianshui
武威 | Wuwei
张掖 | Zhangye
平凉 | Pingliang
酒泉 | Jiuquan
庆阳 | Qingyang
定西 | Dingxi
陇南 | Longnan
[青海 Qinghai]
西宁 | Xining
海东 | Haidong
格尔木 | Golmud | Ge'ermu
[宁夏 Ningxia]
银川 | Yinchuan
石嘴山 | Shizuishan
吴忠 | Wuzhong
固原 | Guyuan
中卫 | Zhongwei
[新疆 Xinjiang]
乌鲁木齐 | Urumqi | Wulumuqi
克拉玛依 | Karamay | Kelamayi
吐鲁番 | Turpan | Tulufan
哈密 | Hami | Kumul
喀什 | Kashgar | Kashi
伊宁 | Yining | Ghulja
库尔勒 | Korla | Ku'erle
阿克苏 | Aksu | Akesu
石河子 | Shihezi
昌吉 | Changji
"""


@dataclass(frozen=True)
class City:
    """One city of the table: its canonical (Chinese) name, English name and province."""

    chinese: str
    english: str
    province: str


@dataclass(frozen=True)
class _Table:
    cities: dict[str, City]  # canonical name -> city
    by_key: dict[str, str]  # lookup key of every spelling -> canonical name
    ambiguous: dict[str, tuple[str, ...]]  # lookup key -> the canonical names it could mean


def _is_cjk(char: str) -> bool:
    return unicodedata.category(char) == "Lo" and "CJK" in unicodedata.name(char, "")


def _tidy(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split())


def _key(text: str) -> str:
    """What lookups compare: Chinese characters as is; Latin letters without case, marks or punctuation."""
    decomposed = unicodedata.normalize("NFKD", _tidy(text)).casefold()
    return "".join(c for c in decomposed if c.isalnum() and not unicodedata.combining(c))


@cache
def _table() -> _Table:
    cities: dict[str, City] = {}
    claims: dict[str, set[str]] = {}
    province = ""
    for line in CHINESE_CITIES.strip().splitlines():
        if line.startswith("["):
            province = line.strip("[]").split()[0]
            continue
        chinese, english, *others = (part.strip() for part in line.split("|"))
        if chinese in cities:
            raise ValueError(f"careflow.customers.cities: {chinese} is listed twice")
        cities[chinese] = City(chinese, english, province)
        for spelling in (chinese, english, *others):
            claims.setdefault(_key(spelling), set()).add(chinese)
    by_key = {key: next(iter(names)) for key, names in claims.items() if len(names) == 1}
    ambiguous = {key: tuple(sorted(names)) for key, names in claims.items() if len(names) > 1}
    return _Table(cities, by_key, ambiguous)


def _stems(key: str) -> list[str]:
    """A lookup key, and the key without a 市 / "city" / "shi" after the name."""
    return [key] + [key.removesuffix(s) for s in _SUFFIXES if key.endswith(s) and len(key) > len(s)]


def _known(key: str) -> str | None:
    """The canonical name a lookup key stands for, if the table knows exactly one."""
    by_key = _table().by_key
    return next((by_key[stem] for stem in _stems(key) if stem in by_key), None)


def _capitalised(text: str) -> str:
    """Each word's first letter upper-case, the rest lower ("los angeles" -> "Los Angeles")."""
    out, start = [], True
    for char in text:
        out.append(char.upper() if start else char.lower())
        start = char in " -"
    return "".join(out)


def canonical_city(text: str) -> str:
    """The spelling careflow stores and matches for ``text``; "" for a blank name."""
    tidy = _tidy(text)
    if not tidy:
        return ""
    found = _known(_key(tidy))
    if found is not None:
        return found
    if any(_is_cjk(c) for c in tidy):
        compact = tidy.replace(" ", "")
        return compact.removesuffix("市") if len(compact) > 2 else compact
    return _capitalised(tidy)


def city_named(name: str) -> City | None:
    """The table's entry for a canonical name, or None for a city it does not know."""
    return _table().cities.get(name)


def ambiguity(text: str) -> tuple[City, ...]:
    """The cities a name could mean when it fits more than one ("Suzhou": 苏州 and 宿州), else ()."""
    table = _table()
    for stem in _stems(_key(text)):
        if stem in table.ambiguous:
            return tuple(table.cities[name] for name in table.ambiguous[stem])
    return ()


def display_name(name: str, locale: str) -> str:
    """A canonical city as a message in ``locale`` should write it: 深圳 in Chinese, Shenzhen otherwise."""
    found = city_named(name)
    if found is None or locale.lower().startswith("zh"):
        return name
    return found.english


def label(name: str) -> str:
    """A canonical city for operators' messages: 北京 (Beijing), so either spelling finds it."""
    found = city_named(name)
    return f"{name} ({found.english})" if found else name


def canonicalise_cards(sessions: sessionmaker[Session], stored: Iterable[str]) -> dict[str, str]:
    """Rewrite cards whose city is not in canonical form (written before, or by other means than import).

    ``stored`` are the distinct city values on cards; one indexed UPDATE per spelling that
    changes, so cards match alerts even when ``careflow.customers.cities`` learns a name after import.
    Returns the spellings changed, old -> new ("" for a blank one, stored as NULL).
    """
    renamed = {old: new for old in stored if (new := canonical_city(old)) != old and len(new) <= MAX_LENGTH}
    if renamed:
        with sessions.begin() as session:
            for old, new in sorted(renamed.items()):
                session.execute(
                    update(Customer)
                    .where(Customer.city == old)
                    .values(city=new or None)
                    .execution_options(synchronize_session=False)
                )
        log.info("%d city spelling(s) on customer cards made canonical", len(renamed))
    return renamed
