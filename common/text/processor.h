// processor.h: Qwen2AudioProcessor's text side: render the chat, expand each <|AUDIO|> to the audio's
// token count (qwen2-audio.md 3.3), tokenize. Token counts come from the caller (audio/audio_len.h:
// audio_token_count(audio_valid_frames(n_samples))), so the length rule lives in one place.
#pragma once
#include "text/chat.h"
#include "text/tokenizer.h"

// Replaces the i-th "<|AUDIO|>" of text by audio_tokens[i] copies, wrapped in <|audio_bos|> ...
// <|audio_eos|> only when the occurrence is neither preceded by <|audio_bos|> nor followed by
// <|audio_eos|>. Returns a new string (caller frees), or NULL with e set when the number of
// occurrences differs from n_audios or a count is negative.
char *processor_expand_audio(const char *text, const int *audio_tokens, int n_audios, Err *e);

// Renders msgs, expands the audio placeholders, and appends the ids to out.
int processor_encode(Tokenizer *tok, const ChatMessage *msgs, int n_msgs, int add_generation_prompt,
                     const int *audio_tokens, int n_audios, TokenIds *out, Err *e);

// The R1-AQA prompt: default system message, one user turn [audio, prompt_text], generation prompt.
int processor_encode_aqa_prompt(Tokenizer *tok, const char *prompt_text, int audio_tokens, TokenIds *out,
                                Err *e);
