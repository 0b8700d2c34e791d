/*
 * lang.c: Whisper's language codes, in the order of its language tokens
 * (openai-whisper tokenizer.py, LANGUAGES). Language index i is token
 * sp.lang_begin + i; models with 51865 tokens know the first 99,
 * large-v3 (51866) all 100 ("yue" was added last).
 */
#include "whisper/model.h"

#include <string.h>

static const char *const codes[] = {
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv",
    "it", "id", "hi", "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no",
    "th", "ur", "hr", "bg", "lt", "la", "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr",
    "az", "sl", "kn", "et", "mk", "br", "eu", "is", "hy", "ne", "mn", "bs", "kk", "sq", "sw",
    "gl", "mr", "pa", "si", "km", "sn", "yo", "so", "af", "oc", "ka", "be", "tg", "sd", "gu",
    "am", "yi", "lo", "uz", "fo", "ht", "ps", "tk", "nn", "mt", "sa", "lb", "my", "bo", "tl",
    "mg", "as", "tt", "haw", "ln", "ha", "ba", "jw", "su", "yue",
};

#define N_CODES ((int)(sizeof codes / sizeof codes[0]))

_Static_assert(sizeof codes / sizeof codes[0] == 100, "Whisper knows 100 languages");

const char *td_wlang_code(int i)
{
    return i >= 0 && i < N_CODES ? codes[i] : NULL;
}

int td_wlang_index(const char *code)
{
    if (!code)
        return -1;
    for (int i = 0; i < N_CODES; i++)
        if (strcmp(codes[i], code) == 0)
            return i;
    return -1;
}

int td_wlang_count(void)
{
    return N_CODES;
}
