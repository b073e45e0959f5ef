// chat.h: the Qwen2-Audio chat template (qwen2-audio.md section 6), rendered in C.
// A conversation is a list of messages; a message has a role and either string content or a list of
// items (audio or text). Audio items render as "Audio k: <|audio_bos|><|AUDIO|><|audio_eos|>\n" with k
// counted over the whole conversation; a missing system message gets the default one. The Jinja source
// of the same template (CHAT_TEMPLATE_QWEN2_AUDIO) goes into tokenizer_config.json; the conformance test
// renders it with the JavaScript Jinja engine and compares.
#pragma once
#include "util/check.h"

typedef enum { CHAT_ITEM_TEXT, CHAT_ITEM_AUDIO } ChatItemType;

typedef struct {
    ChatItemType type;
    const char *text;  // CHAT_ITEM_TEXT only
} ChatItem;

typedef struct {
    const char *role;        // "system", "user", "assistant"
    const char *content;     // string content; NULL when the message is a list of items
    const ChatItem *items;   // [n_items]
    int n_items;
} ChatMessage;

extern const char CHAT_TEMPLATE_QWEN2_AUDIO[];
extern const char CHAT_DEFAULT_SYSTEM[];

// Renders the conversation to a NUL-terminated string (caller frees), appending
// "<|im_start|>assistant\n" when add_generation_prompt. NULL with e set on a malformed message.
char *chat_render(const ChatMessage *msgs, int n_msgs, int add_generation_prompt, Err *e);
