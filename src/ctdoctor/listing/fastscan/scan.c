/*
 * scan.c: the listing grammar, one line at a time.
 *
 * parse_canon reads a line in the exact shape the kernel and conntrack-tools print
 * (ctdoctor/listing/canonical.py describes it) in one pass; parse_line applies the general rules
 * (ctdoctor/listing/grammar.py, the twin of its scan_line) to every line parse_canon declines. A line
 * parse_canon accepts is one parse_line reads the same way (the fuzz tests hold both to it).
 * Nothing here allocates or touches Python objects: it runs without the GIL.
 */
#include "fastscan.h"
#include <arpa/inet.h>
#include <sys/socket.h>

static int all_digits(const char *p, Py_ssize_t n) {
    if (n <= 0) return 0;
    for (Py_ssize_t i = 0; i < n; i++) if (p[i] < '0' || p[i] > '9') return 0;
    return 1;
}

static int is_alnum_tok(const char *p, Py_ssize_t n) {
    if (n <= 0) return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) return 0;
    }
    return 1;
}

static inline int is_state_char(char c) {
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int is_state_tok(const char *p, Py_ssize_t n) {
    if (n <= 0 || n > STATE_MAX) return 0;
    for (Py_ssize_t i = 0; i < n; i++) if (!is_state_char(p[i])) return 0;
    return 1;
}

/* A plain decimal of at most maxd (<= 20) digits and at most limit; -1 otherwise. Never wraps:
   only a 20-digit number can pass 2^64-1, and that one is compared as text. */
/* A validated decimal without its leading zeros ("0" stays "0"). */
static span canon(span s) {
    while (s.n > 1 && s.p[0] == '0') { s.p++; s.n--; }
    return s;
}

/* inet_pton(AF_INET) as glibc does it: four decimal octets <= 255, no leading zeros. */
static int ipv4_pton(span a, unsigned char *out) {
    int octets = 0, saw_digit = 0;
    unsigned v = 0;
    for (Py_ssize_t i = 0; i < a.n; i++) {
        char c = a.p[i];
        if (c >= '0' && c <= '9') {
            if (saw_digit && v == 0) return -1;
            v = v * 10 + (unsigned)(c - '0');
            if (v > 255) return -1;
            if (!saw_digit) { if (++octets > 4) return -1; saw_digit = 1; }
        } else if (c == '.' && saw_digit) {
            if (octets == 4) return -1;
            out[octets - 1] = (unsigned char)v;
            v = 0; saw_digit = 0;
        } else return -1;
    }
    if (octets < 4 || !saw_digit) return -1;
    out[3] = (unsigned char)v;
    return 0;
}

/* Validate an address as inet_pton does: IPv6 when it holds a ':', else IPv4. */
static int addr_check(span a, unsigned char *bin, int *fam) {
    if (a.n <= 0) return -1;
    if (memchr(a.p, ':', a.n)) {
        char tmp[64];
        if (a.n > 45 || memchr(a.p, 0, a.n)) return -1;
        memcpy(tmp, a.p, a.n); tmp[a.n] = 0;
        if (inet_pton(AF_INET6, tmp, bin) != 1) return -1;
        *fam = AF_INET6;
        return 0;
    }
    if (a.n > 15 || ipv4_pton(a, bin) < 0) return -1;
    *fam = AF_INET;
    return 0;
}

/* ---- the general rules: the twin of scan.scan_line ------------------------------------------- */

/* The next token: spaces separate; a "[" token runs to the next token ending in "]". */
static inline int next_token(const char **qp, const char *end, span *t) {
    const char *q = *qp;
    while (q < end && *q == ' ') q++;
    if (q >= end) { *qp = q; return 0; }
    const char *s = q;
    const char *sp = memchr(q, ' ', end - q);
    q = sp ? sp : end;
    if (*s == '[' && !(q - s > 1 && q[-1] == ']')) {
        while (q < end) {
            while (q < end && *q == ' ') q++;
            if (q >= end) break;
            sp = memchr(q, ' ', end - q);
            q = sp ? sp : end;
            if (q[-1] == ']') break;
        }
    }
    t->p = s; t->n = q - s;
    *qp = q;
    return 1;
}

enum { K_OTHER, K_SRC, K_DST, K_SPORT, K_DPORT, K_PACKETS, K_BYTES, K_ZORIG, K_ZREPLY, K_MARK, K_ZONE, K_TAIL };

#define KEYIS(lit) (kl == (Py_ssize_t)sizeof(lit) - 1 && memcmp(s, lit, sizeof(lit) - 1) == 0)

/* Parse one line into e; 0 on success, -1 if it is unreadable. The twin of scan.scan_line. */
int parse_line(const char *p, const char *end, entry *e) {
    span tok[6];
    int ntok = 0;
    const char *q = p;
    span t;
    memset(e, 0, sizeof(*e));
    while (ntok < 6 && next_token(&q, end, &t)) tok[ntok++] = t;
    if (ntok < 4) return -1;
    int i = 0;
    if ((span_eq(tok[0], "ipv4") || span_eq(tok[0], "ipv6") || span_eq(tok[0], "unknown")) &&
        all_digits(tok[1].p, tok[1].n) && is_alnum_tok(tok[2].p, tok[2].n) && !all_digits(tok[2].p, tok[2].n)) {
        e->l3 = tok[0];
        i = 2;
    }
    if (i + 1 >= ntok) return -1;
    if (tok[i].n > PROTO_MAX || !is_alnum_tok(tok[i].p, tok[i].n)) return -1;
    e->proto = tok[i];
    unsigned long long v;
    if (number(tok[i + 1], 3, 255, &v) < 0) return -1;
    if (span_eq(tok[i], "unknown")) e->proto = tok[i + 1];  /* a protocol the kernel has no name for: its number */
    i += 2;
    if (i < ntok && all_digits(tok[i].p, tok[i].n)) i++;
    if (i < ntok && is_state_tok(tok[i].p, tok[i].n)) { e->state = tok[i]; i++; }
    q = (i < ntok) ? tok[i].p : q;
    int tup = -1, tail = 0;
    span zorig = {0}, zrep = {0};
    while (next_token(&q, end, &t)) {
        const char *s = t.p;
        Py_ssize_t n = t.n;
        if (s[0] == '[') {
            if (n == 11 && memcmp(s, "[UNREPLIED]", 11) == 0) e->unreplied = 1;
            else if (n == 9 && memcmp(s, "[ASSURED]", 9) == 0) { e->assured = 1; tail = 1; }
            else if (n == 9 && memcmp(s, "[OFFLOAD]", 9) == 0) { e->offload = 1; tail = 1; }
            else if (n == 12 && memcmp(s, "[HW_OFFLOAD]", 12) == 0) { e->hw_offload = 1; tail = 1; }
            continue;
        }
        const char *eq = memchr(s, '=', n);
        if (!eq) continue;  /* a bare word: vendor output */
        Py_ssize_t kl = eq - s;
        span val = { eq + 1, n - kl - 1 };
        /* the key, told apart by its length first */
        int key = K_OTHER;
        switch (kl) {
        case 3: key = KEYIS("src") ? K_SRC : KEYIS("dst") ? K_DST : KEYIS("use") ? K_TAIL : K_OTHER; break;
        case 4: key = KEYIS("mark") ? K_MARK : KEYIS("zone") ? K_ZONE : K_OTHER; break;
        case 5: key = KEYIS("sport") ? K_SPORT : KEYIS("dport") ? K_DPORT : KEYIS("bytes") ? K_BYTES : K_OTHER; break;
        case 6: key = (KEYIS("secctx") || KEYIS("labels") || KEYIS("helper")) ? K_TAIL : K_OTHER; break;
        case 7: key = KEYIS("packets") ? K_PACKETS : K_OTHER; break;
        case 9: key = KEYIS("zone-orig") ? K_ZORIG : K_OTHER; break;
        case 10: key = KEYIS("zone-reply") ? K_ZREPLY : KEYIS("delta-time") ? K_TAIL : K_OTHER; break;
        }
        switch (key) {
        case K_SRC:
            if (tail) continue;
            if (tup == 1) return -1;
            tup++;
            e->addr[tup * 2] = val;
            continue;
        case K_MARK:
            if (number(val, 10, 0xFFFFFFFFULL, &v) < 0) return -1;
            e->mark = canon(val);
            tail = 1;
            continue;
        case K_ZONE:
            if (number(val, 5, 65535, &v) < 0) return -1;
            e->zone = canon(val);
            tail = 1;
            continue;
        case K_TAIL:
            tail = 1;
            continue;
        }
        if (tail || tup < 0) continue;
        switch (key) {
        case K_DST:
            e->addr[tup * 2 + 1] = val;
            break;
        case K_SPORT: case K_DPORT:
            if (number(val, 5, 65535, &v) < 0) return -1;
            if (tup == 0) { if (key == K_SPORT) e->sport = canon(val); else e->dport = canon(val); }
            break;
        case K_PACKETS: case K_BYTES:
            if (number(val, 20, U64MAX, &v) < 0) return -1;
            if (tup == 0) { if (key == K_BYTES) e->ob = v; else e->opk = v; }
            else { if (key == K_BYTES) e->rb = v; else e->rpk = v; }
            e->acct = 1;
            break;
        case K_ZORIG: case K_ZREPLY:
            if (number(val, 5, 65535, &v) < 0) return -1;
            if (key == K_ZORIG) zorig = canon(val); else zrep = canon(val);
            break;
        }
    }
    if (tup != 1) return -1;
    for (int k = 0; k < 4; k++)
        if (addr_check(e->addr[k], e->bin[k], &e->fam[k]) < 0) return -1;
    if (!e->mark.n) { e->mark.p = "0"; e->mark.n = 1; }
    if (!e->zone.n) e->zone = zorig.n ? zorig : zrep.n ? zrep : (span){"0", 1};
    return 0;
}

/* ---- the canonical line, in one pass (ctdoctor/listing/canonical.py has the grammar) ------------------ */

/* The cursor of parse_canon: q moves over [q, end); every helper returns 0 or -1. */
typedef struct { const char *q, *end; } cur;

static inline int lit(cur *c, const char *s, size_t n) {
    if ((size_t)(c->end - c->q) < n || memcmp(c->q, s, n) != 0) return -1;
    c->q += n;
    return 0;
}
#define LIT(c, s) lit((c), (s), sizeof(s) - 1)
#define HAS(c, s) ((size_t)((c)->end - (c)->q) >= sizeof(s) - 1 && memcmp((c)->q, (s), sizeof(s) - 1) == 0)

/* Runs of one class of characters: spaces, digits, state or protocol characters. (A 16-byte
   SSE2 mask per step measured slower here: the runs are short.) */
enum { C_SPACE, C_DIGIT, C_STATE, C_PROTO };

static inline int in_class(unsigned char ch, int cls) {
    switch (cls) {
    case C_SPACE: return ch == ' ';
    case C_DIGIT: return (unsigned char)(ch - '0') < 10;
    case C_STATE: return (unsigned char)(ch - '0') < 10 || (unsigned char)(ch - 'A') < 26 || ch == '_';
    default: return (unsigned char)(ch - '0') < 10 || (unsigned char)(ch - 'a') < 26;
    }
}

/* How many bytes from p on are in the class (stops at end). */
static inline Py_ssize_t run_of(const char *p, const char *end, int cls) {
    const char *q = p;
    while (q < end && in_class((unsigned char)*q, cls)) q++;
    return q - p;
}

static inline int spaces(cur *c) {  /* one or more */
    Py_ssize_t n = run_of(c->q, c->end, C_SPACE);
    if (!n) return -1;
    c->q += n;
    return 0;
}

static inline int space(cur *c) {  /* exactly one: the body is printed with single spaces */
    if (c->q >= c->end || *c->q != ' ') return -1;
    c->q++;
    return 0;
}

static inline int digits(cur *c, span *s) {  /* one or more, any value */
    Py_ssize_t n = run_of(c->q, c->end, C_DIGIT);
    if (!n) return -1;
    if (s) { s->p = c->q; s->n = n; }
    c->q += n;
    return 0;
}

/* A decimal without leading zeros and at most limit (ports, zones, marks as the kernel prints them). */
static inline int canon_num(cur *c, unsigned long long limit, int maxd, span *s) {
    const char *b = c->q;
    Py_ssize_t n = run_of(b, c->end, C_DIGIT);
    if (n == 0 || n > maxd || (n > 1 && *b == '0')) return -1;
    unsigned long long v = 0;
    for (Py_ssize_t i = 0; i < n; i++) v = v * 10 + (unsigned)(b[i] - '0');
    if (v > limit) return -1;
    if (s) { s->p = b; s->n = n; }
    c->q += n;
    return 0;
}

static inline int counter(cur *c, unsigned long long *out) {  /* at most 19 digits: always < 2^64 */
    const char *b = c->q;
    Py_ssize_t n = run_of(b, c->end, C_DIGIT);
    if (n == 0 || n > 19) return -1;
    unsigned long long v = 0;
    for (Py_ssize_t i = 0; i < n; i++) v = v * 10 + (unsigned)(b[i] - '0');
    *out = v;
    c->q += n;
    return 0;
}

static inline int nonspace(cur *c) {  /* one or more characters up to a space (a NUL: not canonical) */
    const char *b = c->q;
    while (c->q < c->end && *c->q != ' ' && *c->q) c->q++;
    return c->q == b ? -1 : 0;
}

static inline int hexval(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

#if defined(__SSE2__)
#include <emmintrin.h>
/* One octet of 1-3 digits at p (the bytes after it may be read: they are inside the line);
   -1 when it has a leading zero or is over 255. Without branches: octet lengths are random,
   so a branch on them mispredicts. */
static inline int octet_at(const char *p, int len) {
    unsigned a = (unsigned char)p[0] - '0', b = (unsigned char)p[1] - '0', c = (unsigned char)p[2] - '0';
    unsigned two = len >= 2, three = len >= 3;
    unsigned v = a + two * (a * 9 + b) + three * (a * 90 + b * 9 + c);  /* a, a*10+b or a*100+b*10+c */
    unsigned bad = ((unsigned)(len - 1) > 2u) | (two & (a == 0)) | (v > 255);
    return bad ? -1 : (int)v;
}

/* IPv4 by inet_pton's rules from 16 bytes at once: which are digits, dots and the space that
   ends the address, as bit masks; then each octet from its length. 0, -1 not IPv4, -2 too near
   the end of the line to load 16 bytes (the scalar rule decides). */
static inline int v4_sse(const char *b, const char *end, span *s, unsigned char *bin) {
    if (end - b < 19) return -2;
    __m128i v = _mm_loadu_si128((const __m128i *)b);
    __m128i d = _mm_sub_epi8(v, _mm_set1_epi8('0'));
    unsigned md = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(d, _mm_set1_epi8(9)), d));
    unsigned mdot = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8('.')));
    unsigned msp = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(' ')));
    if (!msp) return -1;  /* 16 characters without a space: not an IPv4 address */
    int len = __builtin_ctz(msp);
    unsigned in = (1u << len) - 1;
    if (((md | mdot) & in) != in) return -1;
    unsigned dots = mdot & in, d2 = dots & (dots - 1), d3 = d2 & (d2 - 1);
    if (!d3 || (d3 & (d3 - 1))) return -1;  /* exactly three dots */
    int p1 = __builtin_ctz(dots), p2 = __builtin_ctz(d2), p3 = __builtin_ctz(d3);
    int o0 = octet_at(b, p1), o1 = octet_at(b + p1 + 1, p2 - p1 - 1), o2 = octet_at(b + p2 + 1, p3 - p2 - 1),
        o3 = octet_at(b + p3 + 1, len - p3 - 1);
    if ((o0 | o1 | o2 | o3) < 0) return -1;
    bin[0] = (unsigned char)o0; bin[1] = (unsigned char)o1; bin[2] = (unsigned char)o2; bin[3] = (unsigned char)o3;
    s->p = b; s->n = len;
    return 0;
}
#endif

/* An address followed by a space: IPv4 by inet_pton's rules (one pass: octets <= 255, no leading
   zeros), or IPv6 in the full 8 x 4 hex form /proc prints. */
static inline int canon_addr(cur *c, span *s, unsigned char *bin, int *fam) {
    const char *b = c->q, *e = c->end, *q = b;
#if defined(__SSE2__)
    int r = v4_sse(b, e, s, bin);
    if (r == 0) {
        *fam = AF_INET;
        c->q = b + s->n;
        return 0;
    }
    if (r == -1) goto not_v4;
#endif
    {
        unsigned v = 0;
        int oct = 0, nd = 0;
        while (q < e) {
            unsigned d = (unsigned char)*q - '0';
            if (d < 10) {
                if (nd && v == 0) goto not_v4;  /* a leading zero */
                v = v * 10 + d;
                if (v > 255) goto not_v4;
                nd++;
            } else if (*q == '.') {
                if (!nd || oct == 3) goto not_v4;
                bin[oct++] = (unsigned char)v;
                v = 0; nd = 0;
            } else break;
            q++;
        }
        if (q < e && *q == ' ' && oct == 3 && nd) {
            bin[3] = (unsigned char)v;
            *fam = AF_INET;
            s->p = b; s->n = q - b;
            c->q = q;
            return 0;
        }
    }
not_v4:
    if (e - b > 39 && b[39] == ' ' && b[4] == ':') {
        for (int g = 0; g < 8; g++) {
            const char *h = b + g * 5;
            int v0 = hexval(h[0]), v1 = hexval(h[1]), v2 = hexval(h[2]), v3 = hexval(h[3]);
            if ((v0 | v1 | v2 | v3) < 0 || (g < 7 && h[4] != ':')) return -1;
            bin[g * 2] = (unsigned char)(v0 << 4 | v1);
            bin[g * 2 + 1] = (unsigned char)(v2 << 4 | v3);
        }
        *fam = AF_INET6;
        s->p = b; s->n = 39;
        c->q = b + 39;
        return 0;
    }
    return -1;
}

/* sport=P dport=P | type=N code=N id=N | srckey=0xH dstkey=0xH, each followed by a space. */
static inline int canon_l4(cur *c, span *sport, span *dport) {
    if (HAS(c, "sport=")) {
        c->q += 6;
        if (canon_num(c, 65535, 5, sport) || space(c) || LIT(c, "dport=") || canon_num(c, 65535, 5, dport) ||
            space(c)) return -1;
    } else if (HAS(c, "type=")) {
        c->q += 5;
        if (digits(c, NULL) || LIT(c, " code=") || digits(c, NULL) || LIT(c, " id=") || digits(c, NULL) ||
            space(c)) return -1;
    } else if (HAS(c, "srckey=0x")) {
        c->q += 9;
        const char *b = c->q;
        while (c->q < c->end && ((*c->q >= '0' && *c->q <= '9') || (*c->q >= 'a' && *c->q <= 'f'))) c->q++;
        if (c->q == b || LIT(c, " dstkey=0x")) return -1;
        b = c->q;
        while (c->q < c->end && ((*c->q >= '0' && *c->q <= '9') || (*c->q >= 'a' && *c->q <= 'f'))) c->q++;
        if (c->q == b || space(c)) return -1;
    }
    return 0;
}

static inline int canon_acct(cur *c, entry *e, unsigned long long *pk, unsigned long long *by) {
    if (!HAS(c, "packets=")) return 0;
    c->q += 8;
    if (counter(c, pk) || LIT(c, " bytes=") || counter(c, by) || space(c)) return -1;
    e->acct = 1;
    return 0;
}

/* Parse a line in the canonical shape into e exactly as parse_line would; -1: not in the shape
   (then parse_line decides). [p, end) is trimmed of spaces and \r at both ends. */
int parse_canon(const char *p, const char *end, entry *e) {
    cur c = { p, end };
    span zorig = {0}, zrep = {0}, dummy;
    /* what may stay unset (addresses and their binary form are always written on success):
       field by field, which is cheaper than clearing the whole entry for every line */
    e->l3.n = e->state.n = e->sport.n = e->dport.n = e->mark.n = e->zone.n = 0;
    e->l3.p = e->state.p = e->sport.p = e->dport.p = NULL;
    e->unreplied = e->assured = e->offload = e->hw_offload = e->acct = 0;
    e->opk = e->ob = e->rpk = e->rb = 0;
    /* head: [ipv4|ipv6 L3NUM] PROTO PROTONUM [TIMEOUT] [STATE] */
    if (HAS(&c, "ipv4 ") || HAS(&c, "ipv6 ")) {
        e->l3.p = c.q; e->l3.n = 4;
        c.q += 4;
        if (spaces(&c) || digits(&c, NULL) || spaces(&c)) return -1;
    } else if (HAS(&c, "unknown ")) {
        return -1;  /* "unknown" as l3 or as protocol: the head rule of parse_line decides */
    }
    const char *b = c.q;
    if (c.q >= c.end || *c.q < 'a' || *c.q > 'z') return -1;
    if (HAS(&c, "unknown ")) return -1;  /* an unnamed protocol: parse_line keys it by its number */
    c.q += run_of(c.q, c.end, C_PROTO);
    if (c.q - b > PROTO_MAX) return -1;
    e->proto.p = b; e->proto.n = c.q - b;
    if (spaces(&c)) return -1;
    b = c.q;
    unsigned pn = 0;
    while (c.q < c.end && (unsigned char)(*c.q - '0') < 10) {
        if (c.q - b >= 3) return -1;
        pn = pn * 10 + (unsigned)(*c.q - '0');
        c.q++;
    }
    if (c.q == b || pn > 255 || spaces(&c)) return -1;
    Py_ssize_t n = run_of(c.q, c.end, C_DIGIT);  /* the timeout, when a space follows */
    if (n && c.q + n < c.end && c.q[n] == ' ') { c.q += n; spaces(&c); }
    n = run_of(c.q, c.end, C_STATE);  /* the state: at most 32 of its characters, then a space */
    if (n && n <= STATE_MAX && c.q + n < c.end && c.q[n] == ' ') {
        e->state.p = c.q; e->state.n = n;
        c.q += n;
        spaces(&c);
    }
    /* the original tuple */
    if (LIT(&c, "src=") || canon_addr(&c, &e->addr[0], e->bin[0], &e->fam[0]) || LIT(&c, " dst=") ||
        canon_addr(&c, &e->addr[1], e->bin[1], &e->fam[1]) || space(&c) || canon_l4(&c, &e->sport, &e->dport))
        return -1;
    if (HAS(&c, "zone-orig=")) { c.q += 10; if (canon_num(&c, 65535, 5, &zorig) || space(&c)) return -1; }
    if (canon_acct(&c, e, &e->opk, &e->ob)) return -1;
    if (HAS(&c, "[UNREPLIED] ")) { c.q += 12; e->unreplied = 1; }
    /* the reply tuple */
    span rs = {0}, rd = {0};
    if (LIT(&c, "src=") || canon_addr(&c, &e->addr[2], e->bin[2], &e->fam[2]) || LIT(&c, " dst=") ||
        canon_addr(&c, &e->addr[3], e->bin[3], &e->fam[3]) || space(&c) || canon_l4(&c, &rs, &rd))
        return -1;
    if (HAS(&c, "zone-reply=")) { c.q += 11; if (canon_num(&c, 65535, 5, &zrep) || space(&c)) return -1; }
    if (canon_acct(&c, e, &e->rpk, &e->rb)) return -1;
    /* the tail */
    if (HAS(&c, "[ASSURED] ")) { c.q += 10; e->assured = 1; }
    else if (HAS(&c, "[OFFLOAD] ")) { c.q += 10; e->offload = 1; }
    else if (HAS(&c, "[HW_OFFLOAD] ")) { c.q += 13; e->hw_offload = 1; }
    if (HAS(&c, "mark=")) { c.q += 5; if (canon_num(&c, 0xFFFFFFFFULL, 10, &e->mark) || space(&c)) return -1; }
    if (HAS(&c, "secmark=")) { c.q += 8; if (digits(&c, NULL) || space(&c)) return -1; }
    if (HAS(&c, "secctx=")) { c.q += 7; if (nonspace(&c) || space(&c)) return -1; }
    if (HAS(&c, "zone=")) { c.q += 5; if (canon_num(&c, 65535, 5, &e->zone) || space(&c)) return -1; }
    if (HAS(&c, "delta-time=")) { c.q += 11; if (digits(&c, NULL) || space(&c)) return -1; }
    if (HAS(&c, "helper=")) { c.q += 7; if (nonspace(&c) || space(&c)) return -1; }
    if (LIT(&c, "use=") || digits(&c, &dummy)) return -1;
    if (HAS(&c, " id=")) { c.q += 4; if (digits(&c, NULL)) return -1; }
    if (HAS(&c, " labels=")) { c.q += 8; if (nonspace(&c)) return -1; }
    if (c.q != c.end) return -1;
    if (!e->mark.n) { e->mark.p = "0"; e->mark.n = 1; }
    if (!e->zone.n) e->zone = zorig.n ? zorig : zrep.n ? zrep : (span){"0", 1};
    return 0;
}

/* As feed reads a line: parse_canon, else (no NUL byte in it) parse_line. */
int read_line(const char *s, const char *te, entry *e) {
    if (parse_canon(s, te, e) == 0) return 0;
    if (memchr(s, 0, te - s)) return -1;
    return parse_line(s, te, e);
}

/* inet_ntop(AF_INET6) as glibc prints it (RFC 5952: the longest run of two or more zero words,
   the first of equals, as "::"; ::a.b.c.d and ::ffff:a.b.c.d in dotted form), without the
   sprintf per word that made it the dearest part of an IPv6 key. out: at least 46 bytes. */
size_t ntop6(const unsigned char *src, char *out) {
    static const char hex[] = "0123456789abcdef";
    unsigned w[8];
    int best = -1, blen = 0, cur = -1, clen = 0;
    for (int i = 0; i < 8; i++) {
        w[i] = (unsigned)src[2 * i] << 8 | src[2 * i + 1];
        if (w[i] == 0) {
            if (cur < 0) { cur = i; clen = 1; } else clen++;
        } else if (cur >= 0) {
            if (best < 0 || clen > blen) { best = cur; blen = clen; }
            cur = -1;
        }
    }
    if (cur >= 0 && (best < 0 || clen > blen)) { best = cur; blen = clen; }
    if (best >= 0 && blen < 2) best = -1;
    char *t = out;
    for (int i = 0; i < 8; i++) {
        if (best >= 0 && i >= best && i < best + blen) {
            if (i == best) *t++ = ':';
            continue;
        }
        if (i) *t++ = ':';
        if (i == 6 && best == 0 && (blen == 6 || (blen == 5 && w[5] == 0xffff))) {
            for (int k = 12; k < 16; k++) {
                unsigned v = src[k];
                if (v >= 100) { *t++ = (char)('0' + v / 100); v %= 100; *t++ = (char)('0' + v / 10); *t++ = (char)('0' + v % 10); }
                else if (v >= 10) { *t++ = (char)('0' + v / 10); *t++ = (char)('0' + v % 10); }
                else *t++ = (char)('0' + v);
                if (k < 15) *t++ = '.';
            }
            *t = 0;
            return (size_t)(t - out);
        }
        unsigned v = w[i];
        int started = 0;
        for (int sh = 12; sh >= 0; sh -= 4) {
            unsigned d = (v >> sh) & 15;
            if (d || started || sh == 0) { *t++ = hex[d]; started = 1; }
        }
    }
    if (best >= 0 && best + blen == 8) *t++ = ':';
    *t = 0;
    return (size_t)(t - out);
}
