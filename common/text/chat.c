#include "text/chat.h"

#include <stdlib.h>
#include <string.h>

const char CHAT_DEFAULT_SYSTEM[] = "You are a helpful assistant.";

const char CHAT_TEMPLATE_QWEN2_AUDIO[] =
    "{% set audio_count = namespace(value=0) %}{% for message in messages %}{% if loop.first and "
    "message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif "
    "%}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] "
    "}}<|im_end|>\n{% else %}{% for content in message['content'] %}{% if 'audio' in content or "
    "'audio_url' in content %}{% set audio_count.value = audio_count.value + 1 %}Audio {{ "
    "audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n{% elif 'text' in content %}{{ "
    "content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if "
    "add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

typedef struct {
    char *s;
    size_t n, cap;
} Buf;

static void buf_add(Buf *b, const char *s) {
    size_t l = strlen(s);
    if (b->n + l + 1 > b->cap) {
        b->cap = 2 * (b->n + l + 1) + 256;
        b->s = reallocCheck(b->s, b->cap);
    }
    memcpy(b->s + b->n, s, l + 1);
    b->n += l;
}

char *chat_render(const ChatMessage *msgs, int n_msgs, int add_generation_prompt, Err *e) {
    Buf b = {0};
    buf_add(&b, "");
    int audio_k = 0;
    for (int i = 0; i < n_msgs; i++) {
        const ChatMessage *m = &msgs[i];
        if (!m->role || !*m->role) {
            free(b.s);
            err_set(e, "chat message %d: missing role", i);
            return NULL;
        }
        if (i == 0 && strcmp(m->role, "system") != 0) {
            buf_add(&b, "<|im_start|>system\n");
            buf_add(&b, CHAT_DEFAULT_SYSTEM);
            buf_add(&b, "<|im_end|>\n");
        }
        buf_add(&b, "<|im_start|>");
        buf_add(&b, m->role);
        buf_add(&b, "\n");
        if (m->content) {
            buf_add(&b, m->content);
        } else {
            for (int k = 0; k < m->n_items; k++) {
                const ChatItem *it = &m->items[k];
                if (it->type == CHAT_ITEM_AUDIO) {
                    char head[64];
                    snprintf(head, sizeof head, "Audio %d: ", ++audio_k);
                    buf_add(&b, head);
                    buf_add(&b, "<|audio_bos|><|AUDIO|><|audio_eos|>\n");
                } else if (it->text) {
                    buf_add(&b, it->text);
                } else {
                    free(b.s);
                    err_set(e, "chat message %d item %d: text item without text", i, k);
                    return NULL;
                }
            }
        }
        buf_add(&b, "<|im_end|>\n");
    }
    if (add_generation_prompt) buf_add(&b, "<|im_start|>assistant\n");
    return b.s;
}
