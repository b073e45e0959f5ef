#!/usr/bin/env python3
"""Writes tests/text/corpus.jsonl: the tokenizer conformance corpus (one JSON string per line, so a
"line" may hold \\n and \\r\\n). Deterministic (fixed seed): re-running gives the same file.
Hand-written tricky lines first, then generated lines mixing scripts, emoji, combining marks, digits,
contractions in every case, whitespace runs, punctuation, code, URLs and special tokens.
Avoided on purpose (see common/text/tokenizer.h and tests/text/test_tokenizer.c): U+0085 and U+FEFF,
where the JavaScript reference's \\s differs from HF's (Oniguruma, Unicode White_Space), and characters
newer than Unicode 13 (utf8proc 2.6's tables).
Usage: python3 tests/text/make_corpus.py > tests/text/corpus.jsonl"""
import json
import random
import sys
import unicodedata

HAND = [
    "What's that sound?",
    "Hello world", " Hello world", "Hello world ", "  Hello  world  ", "Hello\tworld", "Hello\nworld",
    "Hello\r\nworld\r\n", "\r\n\r\nHello", "line1\n\n\nline2", "tab\t\t\tseparated\tvalues", " \t \n \r\n ",
    "trailing spaces    ", "    leading spaces", "\n", "\r\n", " ", "\t", "  ", "a\n b\n  c\n   d", "x \n", "x\n ",
    "I'm", "I'M", "i'm", "you'll", "YOU'LL", "You'Ll", "she's", "SHE'S", "She'S", "we've", "WE'VE", "they're",
    "THEY'RE", "They'Re", "he'd", "HE'D", "can't", "CAN'T", "won't", "isn't", "it's it's it's", "'s", "'S",
    "''s", "'ll'll", "rock'n'roll", "O'Neil's", "the cats' toys", "don’t", "It’S", "‘quoted’", "\"double\"",
    "1234567890", "12345678901234567890123456789", "3.14159265358979", "1,000,000.00", "-42", "+7", "1e-10",
    "0x1F600", "2024-05-17T12:34:56Z", "v1.2.3-rc.4", "٠١٢٣٤٥٦٧٨٩", "०१२३४५६७८९", "๐๑๒๓", "Ⅻ Ⅳ ⅷ", "½ ¾ ⅔",
    "x² + y³ = z⁴", "①②③", "10km/h", "$1,299.99", "€50", "¥1000", "99%",
    "!!!", "???", "?!?!", "...", "…", "---", "—", "–", "***", "#hashtag", "@mention", "(parenthesis)", "[brackets]",
    "{braces}", "<angle>", "«guillemets»", "„Anführungszeichen“", "「かぎかっこ」", "【重要】", "、。！？",
    "a.b,c;d:e!f?g", ":-) ;-( :D", "->", "=>", "<=", ">=", "!=", "===", "&&", "||", "::", "...!!!???",
    "def f(x):\n    return x ** 2\n", "for (int i = 0; i < n; i++) {\n\tsum += a[i];\n}",
    "if __name__ == \"__main__\":\n    main()", "#include <stdio.h>\nint main(void) { return 0; }",
    "SELECT * FROM users WHERE id = 42;", "const f = (a, b) => a + b; // sum", "<div class=\"x\">hi</div>",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}", "x = y if z else w  # comment", "echo $HOME && ls -la | grep .c",
    "https://www.example.com/path/to/page?query=1&lang=en#section", "http://localhost:8080/api/v1/users",
    "ftp://files.example.org/pub/file.tar.gz", "mailto:someone@example.com", "user.name+tag@sub.domain.co.uk",
    "https://zh.wikipedia.org/wiki/中文", "www.google.com", "C:\\Users\\name\\file.txt", "/usr/local/bin/python3",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
    "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n", "text<|im_end|>text", "<|AUDIO|><|AUDIO|><|AUDIO|>",
    "Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\n", "<|im_end", "|im_end|>", "<<|im_end|>>", "<|im_end|><|im_end|>",
    "<|IM_END|>", "< |im_end| >", "<|audio_bos|", "x<|endoftext|>y", " <|im_end|> ", "\n<|im_start|>\n",
    "<|im_end|>\u0338", "e\u0301", "cafe\u0301", "A\u030A", "\u212B", "\u2126", "n\u0303", "a\u0323\u0302",
    "a\u0302\u0323", "\u1100\u1161\u11A8", "\u1112\u1161\u11AB\u1100\u1173\u11AF", "\u0958", "\u0915\u093C",
    "o\u0308\u0304", "Ω", "ñ", "Å", "é", "ệ", "ễ", "Việt Nam", "Tiếng Việt có dấu", "\u0041\u0300\u0301",
    "\u05E9\u05C1\u05B8", "\u0627\u0653", "\u0627\u0654", "ﬁ ﬂ ﬀ", "ｆｕｌｌｗｉｄｔｈ", "ＡＢＣ１２３",
    "👨‍👩‍👧‍👦", "👩‍💻", "🏳️‍🌈", "🇺🇸🇫🇷🇯🇵", "👍🏽", "👍🏿👍🏻", "1️⃣ 2️⃣", "❤️", "☺️", "😀😃😄😁",
    "🎵🎶🎸🥁🎹", "🔊 sound on", "the 🐶 barked", "emoji🙂inside", "✓ ✗ ★ ☆ ♪ ♫",
    "中文分词测试", "这是一个关于声音的问题。", "日本語のテキストです。", "カタカナとひらがな", "한국어 텍스트입니다",
    "Привет, мир!", "ПРИВЕТ МИР", "Съешь же ещё этих мягких французских булок", "Ελληνικά κείμενα",
    "مرحبا بالعالم", "هذا نص عربي للاختبار.", "नमस्ते दुनिया", "हिन्दी में परीक्षण पाठ", "สวัสดีชาวโลก",
    "ภาษาไทยไม่มีช่องว่างระหว่างคำ", "שלום עולם", "Ողջույն", "გამარჯობა", "ሰላም", "வணக்கம்", "ສະບາຍດີ",
    "mixed English and 中文 and русский and العربية", "Zürich, Köln, Straße, Ærøskøbing", "ÀÉÎÕÜ àéîõü",
    "İstanbul ılık", "ǅungla ǈ ǋ", "ß ẞ", "ﬀ ﬃ", "Ǆ", "ǰ", "ΐ", "\u00a0non\u00a0breaking\u00a0space",
    "ideographic\u3000space", "em\u2003space", "thin\u2009space", "zero\u200bwidth", "line\u2028separator",
    "para\u2029separator", "vertical\x0btab", "form\x0cfeed", "bell\x07char", "esc\x1b[31mred\x1b[0m",
    "\u200d", "\u200c", "\u2060", "\u180e", "a\u180e\u180eb", "control\x01\x02\x03",
    "a" * 300, "ab" * 150, " " * 50 + "x", "x" + "\n" * 20 + "y", "9" * 100, "!" * 64, "😀" * 30,
    "supercalifragilisticexpialidocious", "pneumonoultramicroscopicsilicovolcanoconiosis",
    "Donaudampfschifffahrtsgesellschaftskapitän", "антидисэстаблишментарианство",
]

WORDS = {
    "en": "the a sound of music dog barking car engine rain thunder speech woman man child bird singing piano "
          "guitar drum loud quiet fast slow happy sad question answer audio clip background noise crowd cheering "
          "which what where when why how identify source instrument genre emotion speaker language".split(),
    "fr": "le la les un une son musique chien voiture pluie parole femme homme enfant oiseau où déjà très "
          "être français garçon naïve cœur".split(),
    "de": "der die das ein eine Klang Musik Hund Auto Regen Sprache Frau Mann Kind Vogel über schön größer "
          "Mädchen Straße".split(),
    "es": "el la los un una sonido música perro coche lluvia habla mujer hombre niño pájaro ¿qué? ¡sí! "
          "año canción".split(),
    "vi": "âm thanh nhạc chó xe mưa người phụ nữ đàn ông trẻ em chim tiếng Việt".split(),
    "zh": "声音 音乐 狗 汽车 雨 说话 女人 男人 孩子 鸟 唱歌 钢琴 吉他 鼓 问题 答案 背景 噪音".split(),
    "ja": "音 音楽 犬 車 雨 話す 女性 男性 子供 鳥 歌う ピアノ ギター 太鼓 質問 答え です ます".split(),
    "ko": "소리 음악 개 자동차 비 말하기 여자 남자 아이 새 노래 피아노 기타 북 질문 대답".split(),
    "ru": "звук музыка собака машина дождь речь женщина мужчина ребёнок птица пение вопрос ответ".split(),
    "ar": "صوت موسيقى كلب سيارة مطر كلام امرأة رجل طفل طائر غناء سؤال جواب".split(),
    "hi": "ध्वनि संगीत कुत्ता गाड़ी बारिश भाषण महिला पुरुष बच्चा पक्षी गाना प्रश्न उत्तर".split(),
    "th": "เสียง ดนตรี สุนัข รถยนต์ ฝน คำพูด ผู้หญิง ผู้ชาย เด็ก นก ร้องเพลง คำถาม คำตอบ".split(),
    "el": "ήχος μουσική σκύλος αυτοκίνητο βροχή ομιλία γυναίκα άντρας παιδί πουλί".split(),
    "he": "צליל מוזיקה כלב מכונית גשם דיבור אישה איש ילד ציפור".split(),
}
EMOJI = "😀 😂 🥰 😎 🤔 😭 👍 👏 🙏 🎵 🎶 🔊 🐶 🐱 🚗 🌧️ ⚡ 👨‍👩‍👧 👩‍🔬 🧑‍🎤 🏃‍♀️ 🇩🇪 🇨🇳 👋🏾 ✌🏼 #️⃣".split()
PUNCT = [".", ",", "!", "?", ";", ":", "...", "?!", "!!", "—", "-", "(", ")", "\"", "'", "«", "»", "。", "，",
         "、", "！", "？", "؟", "،", "।", "•", "/", "\\", "|", "&", "%", "$", "#", "@", "*", "+", "=", "~", "^"]
SEPS = [" "] * 12 + ["", "  ", "   ", "\t", "\n", "\r\n", " \n", "\n\n", " \t ", "\u3000", "\u00a0"]
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"]
SPECIAL = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]
CODE = ["x = f(y)", "a[i] += 1;", "return None", "{\"a\": 1}", "if (x) {", "}", "print(\"hi\")",
        "#define N 128", "let v = vec![1, 2];", "SELECT id FROM t;", "// note", "/* block */", "x->y", "i++"]


def case_variant(rng, w):
    r = rng.random()
    if r < 0.15:
        return w.upper()
    if r < 0.25:
        return w.capitalize()
    if r < 0.3:
        return "".join(c.upper() if rng.random() < 0.5 else c for c in w)
    return w


def token(rng):
    r = rng.random()
    if r < 0.55:
        lang = rng.choice(list(WORDS))
        w = case_variant(rng, rng.choice(WORDS[lang]))
        if lang in ("en", "fr", "de") and rng.random() < 0.1:
            w += case_variant(rng, rng.choice(CONTRACTIONS))
        return w
    if r < 0.65:
        return str(rng.choice([rng.randrange(10), rng.randrange(1000), rng.randrange(10 ** 12)]))
    if r < 0.75:
        return "".join(rng.choice(PUNCT) for _ in range(rng.randint(1, 3)))
    if r < 0.83:
        return rng.choice(EMOJI)
    if r < 0.88:
        return rng.choice(SPECIAL)
    if r < 0.93:
        return rng.choice(CODE)
    if r < 0.96:
        return rng.choice(["https://example.com/", "http://a.b/c?d=e", "www.x.org", "a@b.cd"]) + str(rng.randrange(100))
    return rng.choice(CONTRACTIONS).upper()


def generated(rng, n):
    out = []
    for i in range(n):
        k = rng.choice([1, 2, 3, 5, 8, 13, 21, 40]) if i % 50 else 400  # some long lines
        parts = []
        for _ in range(k):
            parts.append(token(rng))
            parts.append(rng.choice(SEPS))
        s = "".join(parts)
        r = rng.random()
        if r < 0.08:
            s = unicodedata.normalize("NFD", s)  # decomposed input: NFC must recompose it
        elif r < 0.12:
            s = " " * rng.randint(1, 4) + s
        elif r < 0.16:
            s = s.rstrip() + rng.choice(["\n", "\r\n", "  ", "\t", "\n\n"])
        out.append(s)
    return out


def main():
    rng = random.Random(20240517)
    lines = HAND + generated(rng, 2100)
    for s in lines:
        assert "\u0085" not in s and "\ufeff" not in s
        sys.stdout.write(json.dumps(s, ensure_ascii=False) + "\n")


main()
