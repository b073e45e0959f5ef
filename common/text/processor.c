#include "text/processor.h"

#include <stdlib.h>
#include <string.h>

static const char AUDIO[] = "<|AUDIO|>", BOS[] = "<|audio_bos|>", EOS[] = "<|audio_eos|>";

char *processor_expand_audio(const char *text, const int *audio_tokens, int n_audios, Err *e) {
    const size_t la = strlen(AUDIO), lb = strlen(BOS), le = strlen(EOS);
    int found = 0;
    size_t extra = 0;
    for (const char *p = strstr(text, AUDIO); p; p = strstr(p + la, AUDIO)) {
        if (found < n_audios) {
            if (audio_tokens[found] < 0) {
                err_set(e, "audio %d: negative token count %d", found, audio_tokens[found]);
                return NULL;
            }
            extra += (size_t)audio_tokens[found] * la + lb + le;
        }
        found++;
    }
    if (found != n_audios) {
        err_set(e, "the text has %d %s placeholders but %d audios were given", found, AUDIO, n_audios);
        return NULL;
    }
    size_t n = strlen(text), o = 0;
    char *out = mallocCheck(n + extra + 1);
    const char *src = text;
    int k = 0;
    for (const char *p = strstr(text, AUDIO); p; p = strstr(p + la, AUDIO), k++) {
        memcpy(out + o, src, (size_t)(p - src));
        o += (size_t)(p - src);
        int after_bos = p - text >= (long)lb && memcmp(p - lb, BOS, lb) == 0;
        int before_eos = strncmp(p + la, EOS, le) == 0;
        int wrap = !after_bos && !before_eos;
        if (wrap) memcpy(out + o, BOS, lb), o += lb;
        for (int r = 0; r < audio_tokens[k]; r++) memcpy(out + o, AUDIO, la), o += la;
        if (wrap) memcpy(out + o, EOS, le), o += le;
        src = p + la;
    }
    size_t rest = strlen(src);
    memcpy(out + o, src, rest + 1);
    return out;
}

int processor_encode(Tokenizer *tok, const ChatMessage *msgs, int n_msgs, int add_generation_prompt,
                     const int *audio_tokens, int n_audios, TokenIds *out, Err *e) {
    char *text = chat_render(msgs, n_msgs, add_generation_prompt, e);
    if (!text) return -1;
    char *expanded = processor_expand_audio(text, audio_tokens, n_audios, e);
    free(text);
    if (!expanded) return -1;
    int rc = tokenizer_encode(tok, expanded, strlen(expanded), out, e);
    free(expanded);
    return rc;
}

int processor_encode_aqa_prompt(Tokenizer *tok, const char *prompt_text, int audio_tokens, TokenIds *out,
                                Err *e) {
    ChatItem items[2] = {{CHAT_ITEM_AUDIO, NULL}, {CHAT_ITEM_TEXT, prompt_text}};
    ChatMessage msg = {"user", NULL, items, 2};
    return processor_encode(tok, &msg, 1, 1, &audio_tokens, 1, out, e);
}
