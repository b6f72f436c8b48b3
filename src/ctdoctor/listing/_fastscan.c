/*
 * _fastscan: optional accelerator for `ctdoctor top` and the doctor's listing summary.
 *
 * Reads conntrack listing text (/proc/net/nf_conntrack, conntrack -L [-o extended]) or
 * ctnetlink dump/event messages, and aggregates entries by a key made of selected fields,
 * keeping per (key, state label) the count and the accounting sums. It must give exactly what
 * ctdoctor.top.tally.PyAggregator gives (tests compare both, line by line and table by table);
 * ctdoctor works without it.
 *
 * Lines are read in two ways with one result: parse_canon, one pass over the bytes for a line
 * in the exact shape the kernel and conntrack-tools print (ctdoctor/canonical.py describes it),
 * and parse_line, the general rules (ctdoctor/scan.py, the twin of scan_line) for every line
 * parse_canon declines. A line parse_canon accepts is one parse_line reads the same way.
 *
 * Aggregator(fields, states, protos, port, src_nets, dst_nets)
 *   fields:   tuple of field ids (see F_* below) forming the key
 *   states:   tuple of bytes labels to keep, or None
 *   protos:   tuple of bytes protocol names to keep, or None
 *   port:     orig sport or dport to match, or -1
 *   src_nets, dst_nets: tuple of (family, packed address, prefix) or None
 * .feed(buf, skip_first_bad) -> (lines, bad lines, first bad line or 0)
 * .feed_netlink(buf) -> (entries, malformed messages, done)
 * .result() -> {(key bytes, label bytes): [count, opk, ob, rpk, rb]}
 * .matched, .total, .accounting
 * feed_many((agg, ...), buf, skip_first_bad), netlink_feed((agg, ...), buf): one read, many tables.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>
#include <stdarg.h>
#include <stdio.h>
#include <errno.h>
#include <sys/socket.h>
#include <sys/mman.h>
#include <unistd.h>

enum { F_SRC, F_DST, F_SPORT, F_DPORT, F_STATE, F_PROTO, F_ZONE, F_MARK, F_RSRC, F_RDST, F_L3, NFIELDS };

typedef struct { const char *p; Py_ssize_t n; } span;

/* One entry's key fields, validated and bounded (see ctdoctor/scan.py for the rules).
   Addresses keep their text and binary form (IPv6 is printed with inet_ntop only when a key
   needs it); numbers are spans without leading zeros. */
typedef struct {
    span l3, proto, state;
    span addr[4];                          /* src, dst, reply src, reply dst as printed */
    unsigned char bin[4][16];
    int fam[4];
    span sport, dport, mark, zone;
    int unreplied, assured, offload, hw_offload, acct;
    unsigned long long opk, ob, rpk, rb;
} entry;

/* A record of the table: one cache line, with the key and label inside it when they fit (an
   address and a state do), so a lookup touches the index and this line, nothing else. */
#define INLINE_KEY 40
typedef struct {
    uint64_t hash;      /* of key and label */
    long long count;
    uint16_t klen;
    uint8_t llen, pad8;
    uint32_t pad32;
    union { char inl[INLINE_KEY]; char *ptr; } k;  /* key bytes, then label bytes */
} slot;

typedef struct { unsigned long long opk, ob, rpk, rb; } sums;  /* accounting, beside each record */

static inline const char *slot_key(const slot *s) {
    return (size_t)s->klen + s->llen <= INLINE_KEY ? s->k.inl : s->k.ptr;
}

typedef struct {
    PyObject_HEAD
    int fields[NFIELDS];
    int nfields;
    PyObject *states;   /* tuple of bytes or NULL */
    PyObject *protos;
    long port;
    int nsrc, ndst;
    struct net { int family; unsigned char addr[16]; int prefix; } src_nets[64], dst_nets[64];
    slot *slots;        /* records, dense: used of rcap (64-byte aligned) */
    sums *sums;         /* their counter sums, same numbering; NULL until a counter is not 0 */
    size_t rcap, used;
    uint64_t *index;    /* open addressing: (hash tag << 32) | (record number + 1), 0 = empty */
    size_t cap;
    char **blocks;      /* arena for key bytes: freed all at once */
    size_t nblocks, bused, bcap;
    long long matched, total;
    int accounting;     /* an entry had packets=/bytes= counters */
    int noise;          /* an unreadable line was conntrack-tools' or sysctl's stderr */
    long long binary_line;  /* the last feed's first line with a NUL byte, or 0 */
    long long every, tick;  /* count only every n-th entry read (1: all); entries read so far */
} Aggregator;

#define BLOCK (1 << 20)
#define PROTO_MAX 32
#define STATE_MAX 32
#define U64MAX 18446744073709551615ULL

static unsigned long long sat_add(unsigned long long a, unsigned long long b) {
    return a > U64MAX - b ? U64MAX : a + b;
}

static int span_eq(span s, const char *lit) {
    size_t n = strlen(lit);
    return (size_t)s.n == n && memcmp(s.p, lit, n) == 0;
}

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
static inline int number(span s, int maxd, unsigned long long limit, unsigned long long *out) {
    if (s.n <= 0 || s.n > maxd) return -1;
    if (s.n == 20 && memcmp(s.p, "18446744073709551615", 20) > 0) return -1;
    unsigned long long v = 0;
    for (Py_ssize_t i = 0; i < s.n; i++) {
        unsigned d = (unsigned char)s.p[i] - '0';
        if (d > 9) return -1;
        v = v * 10 + d;
    }
    if (v > limit) return -1;
    *out = v;
    return 0;
}

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
static int parse_line(const char *p, const char *end, entry *e) {
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

/* ---- the canonical line, in one pass (ctdoctor/canonical.py has the grammar) ------------------ */

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
static int parse_canon(const char *p, const char *end, entry *e) {
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
static inline int read_line(const char *s, const char *te, entry *e) {
    if (parse_canon(s, te, e) == 0) return 0;
    if (memchr(s, 0, te - s)) return -1;
    return parse_line(s, te, e);
}

/* ---- the table ------------------------------------------------------------------------------- */

static inline uint64_t mix64(uint64_t h) {
    h ^= h >> 33; h *= 0xff51afd7ed558ccdULL; h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53ULL; h ^= h >> 33;
    return h;
}

/* 8 bytes a step; keys are short (an address and a state), so this is a few multiplies. */
static inline uint64_t hash_bytes(const char *p, size_t n, uint64_t seed) {
    uint64_t h = seed ^ (n * 0x9E3779B97F4A7C15ULL);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0x9E3779B97F4A7C15ULL;
        h = (h << 27) | (h >> 37);
        p += 8; n -= 8;
    }
    if (n) {
        uint64_t w = 0;
        memcpy(&w, p, n);
        h = (h ^ w) * 0x9E3779B97F4A7C15ULL;
    }
    return mix64(h);
}

#define SEED 0x2545F4914F6CDD1DULL

static inline uint64_t key_hash(const char *kl, size_t klen, size_t llen) {
    return hash_bytes(kl, klen + llen, SEED ^ (uint64_t)klen);  /* the key's length tells key from label */
}

static int in_nets(const unsigned char *bin, int fam, struct net *nets, int n) {
    for (int i = 0; i < n; i++) {
        if (nets[i].family != fam) continue;
        int bits = nets[i].prefix, full = bits / 8, rem = bits % 8;
        if (memcmp(bin, nets[i].addr, full) != 0) continue;
        if (rem && ((bin[full] ^ nets[i].addr[full]) & (0xff << (8 - rem)) & 0xff)) continue;
        return 1;
    }
    return 0;
}

static span label_of(entry *e) {
    span s;
    if (e->state.n) return e->state;
    if (e->hw_offload) { s.p = "HW_OFFLOAD"; s.n = 10; }
    else if (e->offload) { s.p = "OFFLOAD"; s.n = 7; }
    else if (e->unreplied) { s.p = "UNREPLIED"; s.n = 9; }
    else if (e->assured) { s.p = "ASSURED"; s.n = 7; }
    else { s.p = "REPLIED"; s.n = 7; }
    return s;
}

static int tuple_has(PyObject *tup, span s) {
    Py_ssize_t n = PyTuple_GET_SIZE(tup);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *b = PyTuple_GET_ITEM(tup, i);
        if (PyBytes_GET_SIZE(b) == s.n && memcmp(PyBytes_AS_STRING(b), s.p, s.n) == 0) return 1;
    }
    return 0;
}

static char *arena_alloc(Aggregator *a, size_t n) {
    if (n > BLOCK / 4) {  /* a huge key: its own block */
        char **nb = realloc(a->blocks, (a->nblocks + 1) * sizeof(char *));
        if (!nb) return NULL;
        a->blocks = nb;
        char *p = malloc(n);
        if (!p) return NULL;
        /* keep the current block last */
        if (a->nblocks) { a->blocks[a->nblocks] = a->blocks[a->nblocks - 1]; a->blocks[a->nblocks - 1] = p; }
        else { a->blocks[0] = p; a->bused = a->bcap = 0; }
        a->nblocks++;
        return p;
    }
    if (!a->nblocks || a->bused + n > a->bcap) {
        char **nb = realloc(a->blocks, (a->nblocks + 1) * sizeof(char *));
        if (!nb) return NULL;
        a->blocks = nb;
        char *p = malloc(BLOCK);
        if (!p) return NULL;
        a->blocks[a->nblocks++] = p;
        a->bused = 0; a->bcap = BLOCK;
    }
    char *p = a->blocks[a->nblocks - 1] + a->bused;
    a->bused += n;
    return p;
}

static inline uint64_t tag_of(uint64_t h) { return h >> 32; }

/* The table's big arrays are anonymous mappings: they grow with mremap (no copy), start on a
   page (so 64-byte records stay on one cache line each), and ask for huge pages past 2 MiB
   (a table of 262,144 keys otherwise takes 5,000 page faults). */
static void *map_grow(void *old, size_t oldsize, size_t size) {
    void *p = old ? mremap(old, oldsize, size, MREMAP_MAYMOVE)
                  : mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
#ifdef MADV_HUGEPAGE
    if (size >= (2u << 20)) madvise(p, size, MADV_HUGEPAGE);
#endif
    return p;
}

static void map_free(void *p, size_t size) {
    if (p) munmap(p, size);
}

static int grow(Aggregator *a) {
    size_t ncap = a->cap ? a->cap * 2 : 8192;
    if (ncap > 0xFFFFFFFFULL) return -1;  /* record numbers are 32-bit */
    uint64_t *ni = map_grow(NULL, 0, ncap * sizeof(uint64_t));  /* zeroed */
    if (!ni) return -1;
    for (size_t i = 0; i < a->used; i++) {
        size_t j = a->slots[i].hash & (ncap - 1);
        while (ni[j]) j = (j + 1) & (ncap - 1);
        ni[j] = (tag_of(a->slots[i].hash) << 32) | (uint64_t)(i + 1);
    }
    map_free(a->index, a->cap * sizeof(uint64_t));
    a->index = ni;
    a->cap = ncap;
    return 0;
}

/* Room for more records: slots stay 64-byte aligned (one cache line each). */
static int more_records(Aggregator *a) {
    size_t nr = a->rcap ? a->rcap * 2 : 4096;
    slot *ns = map_grow(a->slots, a->rcap * sizeof(slot), nr * sizeof(slot));
    if (!ns) return -1;
    a->slots = ns;
    if (a->sums) {
        sums *nu = map_grow(a->sums, a->rcap * sizeof(sums), nr * sizeof(sums));
        if (!nu) {  /* keep the slots' new size consistent with the old sums: shrink back */
            slot *back = map_grow(a->slots, nr * sizeof(slot), a->rcap * sizeof(slot));
            if (back) a->slots = back;
            return -1;
        }
        a->sums = nu;
    }
    a->rcap = nr;
    return 0;
}

/* The sums array, made (zeroed) when the first counter that is not 0 comes: a listing without
   accounting never writes it. */
static int need_sums(Aggregator *a) {
    if (a->sums) return 0;
    a->sums = map_grow(NULL, 0, (a->rcap ? a->rcap : 1) * sizeof(sums));
    return a->sums ? 0 : -1;
}

static const sums NO_SUMS = {0, 0, 0, 0};

static inline const sums *sums_of(const Aggregator *a, size_t i) {
    return a->sums ? &a->sums[i] : &NO_SUMS;
}

/* Add counts under (key, label); kl is key then label, contiguous, h their hash (key_hash).
   0, or -1 on no memory. */
static int add_counts(Aggregator *a, const char *kl, size_t klen, size_t llen, uint64_t h, long long cnt,
                      unsigned long long opk, unsigned long long ob, unsigned long long rpk, unsigned long long rb) {
    if ((a->used + 1) * 10 >= a->cap * 7 && grow(a) < 0) return -1;
    uint64_t tag = tag_of(h);
    size_t tl = klen + llen;
    size_t j = h & (a->cap - 1);
    uint64_t ix;
    while ((ix = a->index[j]) != 0) {
        if ((ix >> 32) == tag) {
            size_t r = (ix & 0xFFFFFFFFULL) - 1;
            slot *s = &a->slots[r];
            if (s->hash == h && s->klen == klen && s->llen == llen && memcmp(slot_key(s), kl, tl) == 0) {
                s->count += cnt;
                if (opk | ob | rpk | rb) {
                    if (need_sums(a) < 0) return -1;
                    sums *u = &a->sums[r];
                    u->opk = sat_add(u->opk, opk); u->ob = sat_add(u->ob, ob);
                    u->rpk = sat_add(u->rpk, rpk); u->rb = sat_add(u->rb, rb);
                }
                return 0;
            }
        }
        j = (j + 1) & (a->cap - 1);
    }
    if (a->used == a->rcap && more_records(a) < 0) return -1;
    slot *s = &a->slots[a->used];
    if (tl <= INLINE_KEY) memcpy(s->k.inl, kl, tl);
    else {
        s->k.ptr = arena_alloc(a, tl);
        if (!s->k.ptr) return -1;
        memcpy(s->k.ptr, kl, tl);
    }
    s->klen = (uint16_t)klen; s->llen = (uint8_t)llen; s->hash = h;
    s->count = cnt;
    if (opk | ob | rpk | rb) {
        if (need_sums(a) < 0) return -1;
    }
    if (a->sums) {
        sums *u = &a->sums[a->used];
        u->opk = opk; u->ob = ob; u->rpk = rpk; u->rb = rb;
    }
    a->used++;
    a->index[j] = (tag << 32) | (uint64_t)a->used;
    return 0;
}

#define KEYMAX 2048  /* every field is bounded: 11 fields of at most 64 bytes, and a label of 32 */

static inline void key_put(char *key, size_t *k, const char *p, size_t n) {
    if (*k + n > KEYMAX - 64) n = KEYMAX - 64 - *k;  /* cannot happen: every field is bounded */
    memcpy(key + *k, p, n);
    *k += n;
}

/* inet_ntop(AF_INET6) as glibc prints it (RFC 5952: the longest run of two or more zero words,
   the first of equals, as "::"; ::a.b.c.d and ::ffff:a.b.c.d in dotted form), without the
   sprintf per word that made it the dearest part of an IPv6 key. out: at least 46 bytes. */
static size_t ntop6(const unsigned char *src, char *out) {
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

/* An entry made ready for the table: its key and label, their hash, and its counters. */
typedef struct {
    const char *kl;
    size_t klen, llen;
    uint64_t h;
    unsigned long long opk, ob, rpk, rb;
} ready;

/* Filters, then the key (into buf, KEYMAX bytes) and its hash; 1 when the entry is counted. */
static int prepare(Aggregator *a, entry *e, char *key, ready *r) {
    size_t k = 0;
    span label = label_of(e);
    a->total++;
    if (e->acct) a->accounting = 1;
    /* a sample by position in the read (a dump's order follows the kernel's hash, not the keys) */
    if (a->every > 1 && a->tick++ % a->every) return 0;
    if (a->protos && !tuple_has(a->protos, e->proto)) return 0;
    if (a->states) {
        int ok = tuple_has(a->states, label);
        if (!ok && e->unreplied) { span u = {"UNREPLIED", 9}; ok = tuple_has(a->states, u); }
        if (!ok && e->assured) { span u = {"ASSURED", 7}; ok = tuple_has(a->states, u); }
        if (!ok) return 0;
    }
    if (a->port >= 0) {
        unsigned long long sp, dp;
        if (!((e->sport.n && number(e->sport, 5, 65535, &sp) == 0 && sp == (unsigned long long)a->port) ||
              (e->dport.n && number(e->dport, 5, 65535, &dp) == 0 && dp == (unsigned long long)a->port))) return 0;
    }
    if (a->nsrc && !in_nets(e->bin[0], e->fam[0], a->src_nets, a->nsrc)) return 0;
    if (a->ndst && !in_nets(e->bin[1], e->fam[1], a->dst_nets, a->ndst)) return 0;
    a->matched++;
    for (int f = 0; f < a->nfields; f++) {
        if (f) key_put(key, &k, "\x1f", 1);
        const char *p = "";
        size_t n = 0;
        char v6[48];
        int ai = -1;
        switch (a->fields[f]) {
        case F_SRC: ai = 0; break;
        case F_DST: ai = 1; break;
        case F_RSRC: ai = 2; break;
        case F_RDST: ai = 3; break;
        case F_SPORT: p = e->sport.p; n = (size_t)e->sport.n; break;
        case F_DPORT: p = e->dport.p; n = (size_t)e->dport.n; break;
        case F_STATE: p = label.p; n = (size_t)label.n; break;
        case F_PROTO: p = e->proto.p; n = (size_t)e->proto.n; break;
        case F_ZONE: p = e->zone.p; n = (size_t)e->zone.n; break;
        case F_MARK: p = e->mark.p; n = (size_t)e->mark.n; break;
        case F_L3:
            if (e->l3.n) { p = e->l3.p; n = (size_t)e->l3.n; }
            else { p = e->fam[0] == AF_INET6 ? "ipv6" : "ipv4"; n = 4; }
            break;
        }
        if (ai >= 0) {
            if (e->fam[ai] == AF_INET6) {  /* RFC 5952, as conntrack prints it */
                n = ntop6(e->bin[ai], v6);
                p = v6;
            } else { p = e->addr[ai].p; n = (size_t)e->addr[ai].n; }
        }
        key_put(key, &k, p, n);
    }
    memcpy(key + k, label.p, (size_t)label.n);
    r->kl = key; r->klen = k; r->llen = (size_t)label.n;
    r->h = key_hash(key, k, (size_t)label.n);
    r->opk = e->opk; r->ob = e->ob; r->rpk = e->rpk; r->rb = e->rb;
    return 1;
}

/* Entries of a batch into each aggregator. Lookups in a big table wait on memory: the index
   entries of the whole batch are fetched first, then the records they point to, then each is
   counted, so the waits overlap instead of adding up. 0, or -1 on no memory. */
#define BATCH 16
static int take_batch(Aggregator **aggs, int na, entry *ents, int n, char *keys) {
    ready rs[BATCH];
    int keep[BATCH];
    for (int i = 0; i < na; i++) {
        Aggregator *a = aggs[i];
        for (int j = 0; j < n; j++) {
            keep[j] = prepare(a, &ents[j], keys + (size_t)j * KEYMAX, &rs[j]);
            if (keep[j] && a->cap) __builtin_prefetch(&a->index[rs[j].h & (a->cap - 1)]);
        }
        for (int j = 0; j < n; j++) {
            if (!keep[j] || !a->cap) continue;
            uint64_t ix = a->index[rs[j].h & (a->cap - 1)];
            if (ix) __builtin_prefetch(&a->slots[(ix & 0xFFFFFFFFULL) - 1]);
        }
        for (int j = 0; j < n; j++)
            if (keep[j] && add_counts(a, rs[j].kl, rs[j].klen, rs[j].llen, rs[j].h, 1, rs[j].opk, rs[j].ob,
                                      rs[j].rpk, rs[j].rb) < 0) return -1;
    }
    return 0;
}

/* ---- reading text ---------------------------------------------------------------------------- */

/* What a read of text found besides entries. */
typedef struct { long long lines, bad, first_bad, binary_line; int noise, nomem; } text_read;

static int is_noise(const char *s, const char *te) {  /* conntrack-tools' or sysctl's stderr */
    return memmem(s, te - s, "(conntrack-tools)", 17) || memmem(s, te - s, "nfct_labelmap", 13);
}

/* Read every line of buf into each aggregator, BATCH entries at a time. A line parse_canon
   declines is checked for NUL bytes (binary data: unreadable, and reported) before the general
   rules read it; an unreadable one is checked for conntrack-tools' stderr. */
static void feed_text(Aggregator **aggs, int na, const char *p, const char *end, int skip_first_bad,
                      char *keys, text_read *out) {
    long long lines = 0;
    int first = 1, n = 0;
    entry ents[BATCH];
    memset(out, 0, sizeof(*out));
    while (p < end) {
        const char *nl = memchr(p, '\n', end - p);
        const char *le = nl ? nl : end;
        lines++;
        const char *s = p;
        while (s < le && (*s == ' ' || *s == '\r')) s++;
        const char *te = le;
        while (te > s && (te[-1] == ' ' || te[-1] == '\r')) te--;
        if (s < te) {
            int ok = parse_canon(s, te, &ents[n]) == 0;
            if (!ok) {
                if (memchr(s, 0, te - s)) {
                    if (!out->binary_line) out->binary_line = lines;
                } else ok = parse_line(s, te, &ents[n]) == 0;
            }
            if (!ok) {
                if (!(first && skip_first_bad)) { out->bad++; if (!out->first_bad) out->first_bad = lines; }
                if (!out->noise && is_noise(s, te)) out->noise = 1;
            } else if (++n == BATCH) {
                if (take_batch(aggs, na, ents, n, keys) < 0) { out->nomem = 1; return; }
                n = 0;
            }
            first = 0;
        }
        p = nl ? nl + 1 : end;
    }
    if (n && take_batch(aggs, na, ents, n, keys) < 0) out->nomem = 1;
    out->lines = lines;
}

static PyTypeObject AggregatorType;

/* (lines, bad lines, first bad line or 0); the aggregators' binary_line and noise are set. */
static PyObject *text_result(Aggregator **aggs, int na, Py_buffer *buf, int skip_first_bad) {
    text_read r;
    char *keys = malloc((size_t)BATCH * KEYMAX);
    if (!keys) { PyBuffer_Release(buf); return PyErr_NoMemory(); }
    Py_BEGIN_ALLOW_THREADS
    feed_text(aggs, na, buf->buf, (const char *)buf->buf + buf->len, skip_first_bad, keys, &r);
    Py_END_ALLOW_THREADS
    free(keys);
    PyBuffer_Release(buf);
    for (int i = 0; i < na; i++) {
        aggs[i]->binary_line = r.binary_line;
        aggs[i]->noise |= r.noise;
    }
    if (r.nomem) return PyErr_NoMemory();
    return Py_BuildValue("(LLL)", r.lines, r.bad, r.first_bad);
}

/* feed(buf, skip_first_bad=False) -> (lines, bad lines, first bad line or 0) */
static PyObject *agg_feed(Aggregator *a, PyObject *args) {
    Py_buffer buf;
    int skip_first_bad = 0;
    if (!PyArg_ParseTuple(args, "y*|p", &buf, &skip_first_bad)) return NULL;
    return text_result(&a, 1, &buf, skip_first_bad);
}

/* The aggregators of a tuple, as an array (borrowed); NULL with an exception set if one is not. */
static Aggregator **agg_array(PyObject *tup, int *n) {
    if (!PyTuple_Check(tup) || PyTuple_GET_SIZE(tup) < 1 || PyTuple_GET_SIZE(tup) > 64) {
        PyErr_SetString(PyExc_ValueError, "a tuple of 1 to 64 Aggregators");
        return NULL;
    }
    *n = (int)PyTuple_GET_SIZE(tup);
    Aggregator **out = malloc(sizeof(Aggregator *) * (size_t)*n);
    if (!out) { PyErr_NoMemory(); return NULL; }
    for (int i = 0; i < *n; i++) {
        PyObject *o = PyTuple_GET_ITEM(tup, i);
        if (!PyObject_TypeCheck(o, &AggregatorType)) {
            free(out);
            PyErr_SetString(PyExc_TypeError, "not an Aggregator");
            return NULL;
        }
        out[i] = (Aggregator *)o;
    }
    return out;
}

/* feed_many((agg, ...), buf, skip_first_bad=False): each line read once, taken by every table.
   The tuple keeps the aggregators alive while the GIL is released. */
static PyObject *feed_many(PyObject *self, PyObject *args) {
    PyObject *tup;
    Py_buffer buf;
    int skip_first_bad = 0, n;
    if (!PyArg_ParseTuple(args, "Oy*|p", &tup, &buf, &skip_first_bad)) return NULL;
    Aggregator **aggs = agg_array(tup, &n);
    if (!aggs) { PyBuffer_Release(&buf); return NULL; }
    PyObject *r = text_result(aggs, n, &buf, skip_first_bad);
    free(aggs);
    return r;
}

/* scan_fields(line, how) -> the scan.S_* tuple or None; how 0: the general rules, 1: only the
   canonical shape (None when parse_canon declines), 2: both as feed reads it. For the tests. */
static PyObject *scan_fields(PyObject *self, PyObject *args) {
    Py_buffer buf;
    int how;
    if (!PyArg_ParseTuple(args, "y*i", &buf, &how)) return NULL;
    const char *s = buf.buf, *te = s + buf.len;
    while (s < te && (*s == ' ' || *s == '\r')) s++;
    while (te > s && (te[-1] == ' ' || te[-1] == '\r')) te--;
    entry e;
    int r = how == 0 ? parse_line(s, te, &e) : how == 1 ? parse_canon(s, te, &e) : read_line(s, te, &e);
    if (s >= te || r < 0) { PyBuffer_Release(&buf); Py_RETURN_NONE; }
    char v6[4][48];
    span a[4];
    for (int k = 0; k < 4; k++) {
        if (e.fam[k] == AF_INET6) {
            a[k].n = (Py_ssize_t)ntop6(e.bin[k], v6[k]);
            a[k].p = v6[k];
        } else a[k] = e.addr[k];
    }
    span lab = label_of(&e);
    const char *l3 = e.l3.n ? e.l3.p : (e.fam[0] == AF_INET6 ? "ipv6" : "ipv4");
    Py_ssize_t l3n = e.l3.n ? e.l3.n : 4;
    PyObject *res = Py_BuildValue("(y#y#y#y#y#y#y#y#y#y#y#NNKKKKN)", l3, l3n, e.proto.p, e.proto.n, lab.p, lab.n,
                                  a[0].p, a[0].n, a[1].p, a[1].n, e.sport.p ? e.sport.p : "", e.sport.n,
                                  e.dport.p ? e.dport.p : "", e.dport.n, a[2].p, a[2].n, a[3].p, a[3].n,
                                  e.mark.p, e.mark.n, e.zone.p, e.zone.n, PyBool_FromLong(e.unreplied),
                                  PyBool_FromLong(e.assured), e.opk, e.ob, e.rpk, e.rb, PyBool_FromLong(e.acct));
    PyBuffer_Release(&buf);
    return res;
}

/* ---- reading ctnetlink messages -------------------------------------------------------------- */

typedef struct { const unsigned char *p; int n; } nla;

static void nla_parse(const unsigned char *p, int len, nla *out, int max) {
    for (int i = 0; i < max; i++) { out[i].p = NULL; out[i].n = 0; }
    int off = 0;
    while (off + 4 <= len) {
        uint16_t l, t;
        memcpy(&l, p + off, 2); memcpy(&t, p + off + 2, 2);
        if (l < 4 || off + l > len) break;
        t &= 0x3fff;
        if (t < max) { out[t].p = p + off + 4; out[t].n = l - 4; }
        off += (l + 3) & ~3;
    }
}

static unsigned be16(const unsigned char *p) { return (p[0] << 8) | p[1]; }
static unsigned long be32(const unsigned char *p) {
    return ((unsigned long)p[0] << 24) | ((unsigned long)p[1] << 16) | ((unsigned long)p[2] << 8) | p[3];
}
static unsigned long long be64(const unsigned char *p) {
    return ((unsigned long long)be32(p) << 32) | be32(p + 4);
}

static const char *TCPS[] = {"NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK",
                             "TIME_WAIT", "CLOSE", "SYN_SENT2"};
static const char *SCTPS[] = {"NONE", "CLOSED", "COOKIE_WAIT", "COOKIE_ECHOED", "ESTABLISHED", "SHUTDOWN_SENT",
                              "SHUTDOWN_RECD", "SHUTDOWN_ACK_SENT", "HEARTBEAT_SENT", "HEARTBEAT_ACKED"};
static const char *DCCPS[] = {"NONE", "REQUEST", "RESPOND", "PARTOPEN", "OPEN", "CLOSEREQ", "CLOSING", "TIMEWAIT",
                              "IGNORE", "INVALID"};

static const char *proto_name(int n) {
    switch (n) {
    case 1: return "icmp"; case 6: return "tcp"; case 17: return "udp"; case 33: return "dccp";
    case 47: return "gre"; case 58: return "icmpv6"; case 132: return "sctp"; case 136: return "udplite";
    }
    return "unknown";
}

/* Text the entry's spans point to when it comes from netlink. */
typedef struct { char addr[4][48]; char sport[8], dport[8], mark[16], zone[8], state[16], proto[4]; } nl_text;

/* One tuple: addresses into e (slots k, k+1) and, for the original tuple, the ports; returns the
   protocol number or -1 when the tuple is malformed. zone: CTA_TUPLE_ZONE or -1. */
/* Which of an entry's text fields some aggregator reads (a key field or a filter): the netlink
   decoder formats only those, so a tally by state or protocol never prints an address. */
enum { NEED_ADDR0 = 1, NEED_ADDR1 = 2, NEED_ADDR2 = 4, NEED_ADDR3 = 8, NEED_PORTS = 16, NEED_MARK = 32,
       NEED_ZONE = 64 };

static int needs_of(Aggregator **aggs, int na) {
    int need = 0;
    for (int i = 0; i < na; i++) {
        Aggregator *a = aggs[i];
        if (a->port >= 0) need |= NEED_PORTS;
        for (int f = 0; f < a->nfields; f++) {
            switch (a->fields[f]) {
            case F_SRC: need |= NEED_ADDR0; break;
            case F_DST: need |= NEED_ADDR1; break;
            case F_RSRC: need |= NEED_ADDR2; break;
            case F_RDST: need |= NEED_ADDR3; break;
            case F_SPORT: case F_DPORT: need |= NEED_PORTS; break;
            case F_MARK: need |= NEED_MARK; break;
            case F_ZONE: need |= NEED_ZONE; break;
            }
        }
    }
    return need;
}

/* An IPv4 address as inet_ntop prints it, without its locale and bounds machinery. */
static Py_ssize_t ntop4(const unsigned char *a, char *out) {
    char *o = out;
    for (int i = 0; i < 4; i++) {
        unsigned v = a[i];
        if (i) *o++ = '.';
        if (v >= 100) { *o++ = (char)('0' + v / 100); v %= 100; *o++ = (char)('0' + v / 10); *o++ = (char)('0' + v % 10); }
        else if (v >= 10) { *o++ = (char)('0' + v / 10); *o++ = (char)('0' + v % 10); }
        else *o++ = (char)('0' + v);
    }
    *o = 0;
    return o - out;
}

/* A number without leading zeros, as the text listings print it. */
static Py_ssize_t utoa(unsigned long v, char *out) {
    char tmp[24];
    int n = 0;
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    for (int i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    out[n] = 0;
    return n;
}

static int nl_tuple(nla t, entry *e, int k, nl_text *tx, int orig, int *zone, int need) {
    nla a[8], ip[8], pr[16];
    nla_parse(t.p, t.n, a, 8);
    *zone = -1;
    if (!a[1].p) return -1;
    nla_parse(a[1].p, a[1].n, ip, 8);
    int fam;
    const unsigned char *s, *d;
    if (ip[1].p && ip[2].p && ip[1].n == 4 && ip[2].n == 4) { fam = AF_INET; s = ip[1].p; d = ip[2].p; }
    else if (ip[3].p && ip[4].p && ip[3].n == 16 && ip[4].n == 16) { fam = AF_INET6; s = ip[3].p; d = ip[4].p; }
    else return -1;
    for (int x = 0; x < 2; x++) {
        const unsigned char *src = x ? d : s;
        memset(e->bin[k + x], 0, 16);
        memcpy(e->bin[k + x], src, fam == AF_INET ? 4 : 16);
        e->fam[k + x] = fam;
        /* IPv6 keys are printed from bin (ntop6); an IPv4 one from this text, made only when read */
        if (fam == AF_INET && (need & (NEED_ADDR0 << (k + x)))) {
            e->addr[k + x].n = ntop4(src, tx->addr[k + x]);
            e->addr[k + x].p = tx->addr[k + x];
        }
    }
    int proto = 0;  /* no CTA_TUPLE_PROTO: protocol 0, "unknown", as decode_entry reads it */
    if (a[2].p) {
        nla_parse(a[2].p, a[2].n, pr, 16);
        if (!pr[1].p || pr[1].n < 1) return -1;
        proto = pr[1].p[0];
        if (!pr[2].p != !pr[3].p || (pr[2].p && (pr[2].n < 2 || pr[3].n < 2))) return -1;
        /* ports travel in CTA_PROTO_SRC/DST_PORT; GRE's keys too (they are not ports) */
        if (orig && proto != 47 && pr[2].p && (need & NEED_PORTS)) {
            e->sport.n = utoa(be16(pr[2].p), tx->sport);
            e->sport.p = tx->sport;
            e->dport.n = utoa(be16(pr[3].p), tx->dport);
            e->dport.p = tx->dport;
        }
    }
    if (a[3].p && a[3].n >= 2) *zone = (int)be16(a[3].p);
    return proto;
}

/* A CT_NEW message's attributes (after nfgenmsg) into e, as ctnetlink.decode_entry and
   top.entry_fields read them; -1 when malformed. */
static int nl_entry(const unsigned char *p, int len, int family, entry *e, nl_text *tx, int need) {
    nla a[32];
    memset(e, 0, sizeof(*e));
    nla_parse(p, len, a, 32);
    int zo, zr;
    if (!a[1].p || !a[2].p) return -1;
    int proto = nl_tuple(a[1], e, 0, tx, 1, &zo, need);
    if (proto < 0 || nl_tuple(a[2], e, 2, tx, 0, &zr, need) < 0) return -1;
    e->l3.p = family == AF_INET ? "ipv4" : "ipv6";
    e->l3.n = 4;
    e->proto.p = proto_name(proto);
    if (strcmp(e->proto.p, "unknown") == 0) {  /* a protocol with no name: its number, as the text readers do */
        snprintf(tx->proto, sizeof(tx->proto), "%d", proto & 255);
        e->proto.p = tx->proto;
    }
    e->proto.n = (Py_ssize_t)strlen(e->proto.p);
    unsigned long status = a[3].p && a[3].n >= 4 ? be32(a[3].p) : 0;
    e->hw_offload = (status & (1 << 15)) != 0;
    e->offload = !e->hw_offload && (status & (1 << 14)) != 0;
    e->unreplied = !(status & (1 << 1));
    e->assured = (status & (1 << 2)) && !e->offload && !e->hw_offload;
    if (a[4].p) {
        nla pi[4], st[4];
        nla_parse(a[4].p, a[4].n, pi, 4);
        const char **names = NULL; int k = 0;
        if (pi[1].p) { names = TCPS; k = 1; }
        else if (pi[3].p) { names = SCTPS; k = 3; }
        else if (pi[2].p) { names = DCCPS; k = 2; }
        if (names) {
            nla_parse(pi[k].p, pi[k].n, st, 4);
            if (st[1].p && st[1].n >= 1) {
                int i = st[1].p[0];
                if (i < 10) { e->state.p = names[i]; e->state.n = (Py_ssize_t)strlen(names[i]); }
                else { e->state.n = snprintf(tx->state, sizeof tx->state, "%d", i); e->state.p = tx->state; }
            }
        }
    }
    if (a[8].p && a[8].n >= 4 && (need & NEED_MARK)) {
        e->mark.n = utoa(be32(a[8].p), tx->mark);
        e->mark.p = tx->mark;
    } else { e->mark.p = ""; e->mark.n = 0; }  /* no CTA_MARK: entry_fields gives b"" */
    if (need & NEED_ZONE) {
        int zone = a[18].p && a[18].n >= 2 ? (int)be16(a[18].p) : zo >= 0 ? zo : zr >= 0 ? zr : 0;
        e->zone.n = utoa((unsigned long)zone, tx->zone);
        e->zone.p = tx->zone;
    } else { e->zone.p = ""; e->zone.n = 0; }
    for (int d = 0; d < 2; d++) {
        nla c = a[9 + d], k[4];
        if (!c.p) continue;
        nla_parse(c.p, c.n, k, 4);
        if (k[1].p && k[2].p && k[1].n >= 8 && k[2].n >= 8) {
            if (d == 0) { e->opk = be64(k[1].p); e->ob = be64(k[2].p); }
            else { e->rpk = be64(k[1].p); e->rb = be64(k[2].p); }
            e->acct = 1;
        } else return -1;
    }
    return 0;
}

/* Read every conntrack message of a netlink receive buffer into each aggregator. */
static void feed_nl(Aggregator **aggs, int na, const unsigned char *p, Py_ssize_t n, char *keys, long long *entries,
                    long long *malformed, int *done, int *err, int *nomem) {
    Py_ssize_t off = 0;
    entry ents[BATCH];
    nl_text tx[BATCH];
    int k = 0, need = needs_of(aggs, na);
    while (off + 16 <= n) {
        uint32_t len; uint16_t type;
        memcpy(&len, p + off, 4); memcpy(&type, p + off + 4, 2);
        if (len < 16 || off + len > n) break;
        if (type == 3) { *done = 1; break; }
        if (type == 2 && len >= 20) { int32_t x; memcpy(&x, p + off + 16, 4); if (x) { *err = -x; break; } }
        if ((type >> 8) == 1) {  /* a ctnetlink message: a dump's or an event's entry */
            if (len < 20 || nl_entry(p + off + 20, (int)len - 20, p[off + 16], &ents[k], &tx[k], need) < 0) (*malformed)++;
            else {
                (*entries)++;
                if (++k == BATCH) {
                    if (take_batch(aggs, na, ents, k, keys) < 0) { *nomem = 1; return; }
                    k = 0;
                }
            }
        }
        off += (len + 3) & ~3;
    }
    if (k && take_batch(aggs, na, ents, k, keys) < 0) *nomem = 1;
}

static PyObject *nl_result(Py_buffer *pb, Aggregator **aggs, int na) {
    long long entries = 0, malformed = 0;
    int done = 0, err = 0, nomem = 0;
    char *keys = malloc((size_t)BATCH * KEYMAX);
    if (!keys) { PyBuffer_Release(pb); return PyErr_NoMemory(); }
    Py_BEGIN_ALLOW_THREADS
    feed_nl(aggs, na, pb->buf, pb->len, keys, &entries, &malformed, &done, &err, &nomem);
    Py_END_ALLOW_THREADS
    free(keys);
    PyBuffer_Release(pb);
    if (nomem) return PyErr_NoMemory();
    if (err) { errno = err; return PyErr_SetFromErrno(PyExc_OSError); }
    return Py_BuildValue("(LLO)", entries, malformed, done ? Py_True : Py_False);
}

/* feed_netlink(buf) -> (entries, malformed messages, done): a dump's or event socket's buffer. */
static PyObject *agg_feed_netlink(Aggregator *a, PyObject *args) {
    Py_buffer pb;
    if (!PyArg_ParseTuple(args, "y*", &pb)) return NULL;
    return nl_result(&pb, &a, 1);
}

/* netlink_feed((agg, ...), buf) -> (entries, malformed messages, done) */
static PyObject *netlink_feed(PyObject *self, PyObject *args) {
    PyObject *tup;
    Py_buffer pb;
    int n;
    if (!PyArg_ParseTuple(args, "Oy*", &tup, &pb)) return NULL;
    Aggregator **aggs = agg_array(tup, &n);
    if (!aggs) { PyBuffer_Release(&pb); return NULL; }
    PyObject *r = nl_result(&pb, aggs, n);
    free(aggs);
    return r;
}

/* ---- selecting entries to delete (flush) ------------------------------------------------------- */

/* netlink_select(agg, buf, protect_established, seq, ack_every=1)
       -> (entries, matched, protected, malformed, done, requests)
   Each conntrack message of a dump buffer is decoded and put through agg's filters (states, protos,
   port, networks: the same rules as top's); an ASSURED ESTABLISHED TCP entry is kept (counted as
   protected) when asked. For every entry that passes, agg counts it (by its key: the dry run's
   breakdown) and a CT_DELETE request is appended to ``requests``: the dump's own CTA_TUPLE_ORIG,
   CTA_ZONE and CTA_ID attributes copied as they came (the kernel deletes that entry only, never one
   re-created with the same tuple since), flags REQUEST|ACK, sequence numbers from ``seq`` on. */
static PyObject *netlink_select(PyObject *self, PyObject *args) {
    PyObject *ao;
    Py_buffer pb;
    int protect;
    unsigned int seq, ack_every = 1;
    if (!PyArg_ParseTuple(args, "O!y*pI|I", &AggregatorType, &ao, &pb, &protect, &seq, &ack_every)) return NULL;
    if (ack_every < 1) ack_every = 1;
    Aggregator *a = (Aggregator *)ao;
    const unsigned char *p = pb.buf;
    Py_ssize_t n = pb.len, off = 0;
    size_t cap = (size_t)n / 2 + 64, used = 0;
    unsigned char *out = malloc(cap);
    char *key = malloc(KEYMAX);
    if (!out || !key) { free(out); free(key); PyBuffer_Release(&pb); return PyErr_NoMemory(); }
    long long entries = 0, matched = 0, protected_ = 0, malformed = 0;
    int done = 0, err = 0, nomem = 0;
    Py_BEGIN_ALLOW_THREADS
    int need = needs_of(&a, 1);
    while (off + 16 <= n && !nomem) {
        uint32_t len; uint16_t type;
        memcpy(&len, p + off, 4); memcpy(&type, p + off + 4, 2);
        if (len < 16 || off + len > n) break;
        if (type == 3) { done = 1; break; }
        if (type == 2 && len >= 20) { int32_t x; memcpy(&x, p + off + 16, 4); if (x) { err = -x; break; } }
        if ((type >> 8) == 1) {
            entry e;
            nl_text tx;
            const unsigned char *body = p + off + 20;
            int blen = (int)len - 20;
            if (len < 20 || nl_entry(body, blen, p[off + 16], &e, &tx, need) < 0) { malformed++; goto next; }
            entries++;
            if (protect && e.assured && e.state.p && span_eq(e.state, "ESTABLISHED")) { protected_++; goto next; }
            ready r;
            if (!prepare(a, &e, key, &r)) goto next;
            if (add_counts(a, r.kl, r.klen, r.llen, r.h, 1, r.opk, r.ob, r.rpk, r.rb) < 0) { nomem = 1; break; }
            matched++;
            nla at[32];
            nla_parse(body, blen, at, 32);
            /* the attributes as they came, each with its 4-byte header (nla_parse points past it) */
            size_t need_b = 20 + 8 + (size_t)at[1].n + (at[18].p ? 8 + (size_t)at[18].n : 0)
                            + (at[12].p ? 8 + (size_t)at[12].n : 0) + 16;
            if (used + need_b > cap) {
                size_t nc = (cap + need_b) * 2;
                unsigned char *grown = realloc(out, nc);
                if (!grown) { nomem = 1; break; }
                out = grown; cap = nc;
            }
            unsigned char *m = out + used;
            size_t w = 20;
            int ids[3] = {1, 18, 12};  /* CTA_TUPLE_ORIG, CTA_ZONE, CTA_ID */
            for (int k = 0; k < 3; k++) {
                nla x = at[ids[k]];
                if (!x.p) continue;
                size_t alen = (size_t)x.n + 4, padded = (alen + 3) & ~(size_t)3;
                memcpy(m + w, x.p - 4, alen);
                memset(m + w + alen, 0, padded - alen);
                w += padded;
            }
            uint32_t mlen = (uint32_t)w;
            /* CTNETLINK CT_DELETE; REQUEST, and ACK on every ack_every-th: the kernel answers the others
               only when they fail, and a batch is done when its last one is acknowledged */
            uint32_t mseq = seq++, pid = 0;
            uint16_t mtype = (1 << 8) | 2, mflags = 0x1 | (mseq % ack_every == 0 ? 0x4 : 0);
            memcpy(m, &mlen, 4); memcpy(m + 4, &mtype, 2); memcpy(m + 6, &mflags, 2);
            memcpy(m + 8, &mseq, 4); memcpy(m + 12, &pid, 4);
            m[16] = p[off + 16]; m[17] = 0; m[18] = 0; m[19] = 0;  /* nfgenmsg: the entry's family */
            used += w;
        }
    next:
        off += (len + 3) & ~3;
    }
    Py_END_ALLOW_THREADS
    free(key);
    PyBuffer_Release(&pb);
    if (nomem) { free(out); return PyErr_NoMemory(); }
    if (err) { free(out); errno = err; return PyErr_SetFromErrno(PyExc_OSError); }
    PyObject *req = PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)used);
    free(out);
    if (!req) return NULL;
    return Py_BuildValue("(LLLLON)", entries, matched, protected_, malformed, done ? Py_True : Py_False, req);
}

/* ---- results --------------------------------------------------------------------------------- */

static PyObject *agg_result(Aggregator *a, PyObject *noargs) {
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    for (size_t i = 0; i < a->used; i++) {
        slot *s = &a->slots[i];
        const sums *u = sums_of(a, i);
        const char *key = slot_key(s);
        PyObject *k = Py_BuildValue("(y#y#)", key, (Py_ssize_t)s->klen, key + s->klen, (Py_ssize_t)s->llen);
        PyObject *v = Py_BuildValue("[LKKKK]", s->count, u->opk, u->ob, u->rpk, u->rb);
        if (!k || !v || PyDict_SetItem(d, k, v) < 0) { Py_XDECREF(k); Py_XDECREF(v); Py_DECREF(d); return NULL; }
        Py_DECREF(k); Py_DECREF(v);
    }
    return d;
}

static PyObject *agg_merge(Aggregator *a, PyObject *args) {
    PyObject *o;
    const char *pre = "";
    Py_ssize_t plen = 0;
    if (!PyArg_ParseTuple(args, "O!|y#", &AggregatorType, &o, &pre, &plen)) return NULL;
    Aggregator *b = (Aggregator *)o;
    char stack[KEYMAX];
    int nomem = 0, toolong = 0;
    Py_BEGIN_ALLOW_THREADS
    for (size_t i = 0; i < b->used && !nomem && !toolong; i += BATCH) {
        size_t n = b->used - i < BATCH ? b->used - i : BATCH;
        uint64_t hs[BATCH];
        /* as in take_batch: fetch the index entries of a batch before counting them */
        for (size_t j = 0; j < n; j++) {
            slot *s = &b->slots[i + j];
            if (plen) {
                if ((size_t)plen + s->klen + s->llen > sizeof stack) { hs[j] = 0; continue; }
                memcpy(stack, pre, (size_t)plen);
                memcpy(stack + plen, slot_key(s), s->klen + s->llen);
                hs[j] = key_hash(stack, (size_t)plen + s->klen, s->llen);
            } else hs[j] = s->hash;  /* the same bytes: the same hash */
            if (a->cap) __builtin_prefetch(&a->index[hs[j] & (a->cap - 1)]);
        }
        for (size_t j = 0; j < n; j++) {
            slot *s = &b->slots[i + j];
            const sums *u = sums_of(b, i + j);
            size_t tl = (size_t)plen + s->klen + s->llen;
            if ((size_t)plen + s->klen > 0xFFFF) { toolong = 1; break; }
            char *kl = tl <= sizeof stack ? stack : malloc(tl);
            if (!kl) { nomem = 1; break; }
            memcpy(kl, pre, (size_t)plen);
            memcpy(kl + plen, slot_key(s), s->klen + s->llen);
            size_t kn = (size_t)plen + s->klen;
            uint64_t h = tl <= sizeof stack ? hs[j] : key_hash(kl, kn, s->llen);
            int r = add_counts(a, kl, kn, s->llen, h, s->count, u->opk, u->ob, u->rpk, u->rb);
            if (kl != stack) free(kl);
            if (r < 0) { nomem = 1; break; }
        }
    }
    Py_END_ALLOW_THREADS
    if (toolong) { PyErr_SetString(PyExc_ValueError, "key too long"); return NULL; }
    if (nomem) return PyErr_NoMemory();
    a->matched += b->matched;
    a->total += b->total;
    a->accounting |= b->accounting;
    Py_RETURN_NONE;
}

/* ---- top(limit) ------------------------------------------------------------------------------
   Rows are keys; a key's records (one per label) are grouped in three passes: (1) each record's
   group, by the key alone, into gid[], with the group's count; (2) the best groups by count,
   then key bytes; (3) over the records in order, the sums and label counts of the winners only. */

static Aggregator *sort_ctx;
static const uint32_t *sort_first;   /* group -> its first record */
static const long long *sort_count;  /* group -> entries */

static int cmp_group(const void *x, const void *y) {
    uint32_t g = *(const uint32_t *)x, h = *(const uint32_t *)y;
    if (sort_count[g] != sort_count[h]) return sort_count[g] > sort_count[h] ? -1 : 1;
    slot *a = &sort_ctx->slots[sort_first[g]], *b = &sort_ctx->slots[sort_first[h]];
    size_t n = a->klen < b->klen ? a->klen : b->klen;
    int c = memcmp(slot_key(a), slot_key(b), n);
    if (c) return c;
    return a->klen < b->klen ? -1 : (a->klen > b->klen ? 1 : 0);
}

/* top(limit) -> (groups, [(key, count, opk, ob, rpk, rb, {label: count})]) sorted by count, then key bytes */
static PyObject *agg_top(Aggregator *a, PyObject *args) {
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "n", &limit)) return NULL;
    size_t used = a->used, tcap = 16;
    while (tcap < used * 2 + 2) tcap <<= 1;
    uint32_t *tab = malloc(tcap * sizeof(uint32_t));   /* group + 1, 0 empty */
    uint64_t *kh = malloc((used + 1) * sizeof(uint64_t));
    uint32_t *gid = malloc((used + 1) * sizeof(uint32_t));
    uint32_t *first = malloc((used + 1) * sizeof(uint32_t));
    long long *count = calloc(used + 1, sizeof(long long));
    if (!tab || !kh || !gid || !first || !count) {
        free(tab); free(kh); free(gid); free(first); free(count);
        return PyErr_NoMemory();
    }
    memset(tab, 0, tcap * sizeof(uint32_t));
    size_t ng = 0;
    for (size_t i = 0; i < used; i++) kh[i] = hash_bytes(slot_key(&a->slots[i]), a->slots[i].klen, SEED);
    for (size_t i = 0; i < used; i++) {  /* pass 1 */
        if (i + 8 < used) __builtin_prefetch(&tab[kh[i + 8] & (tcap - 1)]);
        slot *s = &a->slots[i];
        size_t j = kh[i] & (tcap - 1);
        uint32_t g;
        for (;;) {
            uint32_t t = tab[j];
            if (!t) { g = (uint32_t)ng++; tab[j] = g + 1; first[g] = (uint32_t)i; break; }
            slot *f = &a->slots[first[t - 1]];
            if (kh[first[t - 1]] == kh[i] && f->klen == s->klen && memcmp(slot_key(f), slot_key(s), s->klen) == 0) {
                g = t - 1;
                break;
            }
            j = (j + 1) & (tcap - 1);
        }
        gid[i] = g;
        count[g] += s->count;
    }
    free(tab); free(kh);
    size_t n = (limit > 0 && (size_t)limit < ng) ? (size_t)limit : ng;
    uint32_t *order = malloc((ng + 1) * sizeof(uint32_t));
    long *rank = malloc((ng + 1) * sizeof(long));
    if (!order || !rank) { free(order); free(rank); free(gid); free(first); free(count); return PyErr_NoMemory(); }
    sort_ctx = a; sort_first = first; sort_count = count;
    if (n == ng) {
        for (size_t g = 0; g < ng; g++) order[g] = (uint32_t)g;
        qsort(order, ng, sizeof(uint32_t), cmp_group);
    } else {  /* pass 2: the n best in a heap whose root is the worst of them */
        size_t hn = 0;
        for (uint32_t g = 0; g < ng; g++) {
            if (hn < n) {
                size_t c = hn++;
                order[c] = g;
                while (c > 0) {
                    size_t p = (c - 1) / 2;
                    if (cmp_group(&order[c], &order[p]) <= 0) break;
                    uint32_t t = order[c]; order[c] = order[p]; order[p] = t; c = p;
                }
            } else if (cmp_group(&g, &order[0]) < 0) {
                order[0] = g;
                size_t c = 0;
                for (;;) {
                    size_t l = 2 * c + 1, r = l + 1, m = c;
                    if (l < hn && cmp_group(&order[l], &order[m]) > 0) m = l;
                    if (r < hn && cmp_group(&order[r], &order[m]) > 0) m = r;
                    if (m == c) break;
                    uint32_t t = order[c]; order[c] = order[m]; order[m] = t; c = m;
                }
            }
        }
        qsort(order, n, sizeof(uint32_t), cmp_group);
    }
    for (size_t g = 0; g < ng; g++) rank[g] = -1;
    for (size_t r = 0; r < n; r++) rank[order[r]] = (long)r;
    PyObject *rows = PyList_New((Py_ssize_t)n);
    PyObject **labels = calloc(n + 1, sizeof(PyObject *));
    sums *tot = calloc(n + 1, sizeof(sums));
    if (!rows || !labels || !tot) {
        Py_XDECREF(rows); free(labels); free(tot); free(order); free(rank); free(gid); free(first); free(count);
        return PyErr_NoMemory();
    }
    for (size_t r = 0; r < n; r++) labels[r] = PyDict_New();
    for (size_t i = 0; i < used; i++) {  /* pass 3: in record order, only the winners */
        long r = rank[gid[i]];
        if (r < 0) continue;
        slot *s = &a->slots[i];
        const sums *u = sums_of(a, i);
        sums *t = &tot[r];
        t->opk = sat_add(t->opk, u->opk); t->ob = sat_add(t->ob, u->ob);
        t->rpk = sat_add(t->rpk, u->rpk); t->rb = sat_add(t->rb, u->rb);
        PyObject *k = PyBytes_FromStringAndSize(slot_key(s) + s->klen, s->llen);
        PyObject *v = PyLong_FromLongLong(s->count);
        PyDict_SetItem(labels[r], k, v);
        Py_DECREF(k); Py_DECREF(v);
    }
    for (size_t r = 0; r < n; r++) {
        uint32_t g = order[r];
        slot *f = &a->slots[first[g]];
        PyObject *row = Py_BuildValue("(y#LKKKKN)", slot_key(f), (Py_ssize_t)f->klen, count[g], tot[r].opk,
                                      tot[r].ob, tot[r].rpk, tot[r].rb, labels[r]);
        PyList_SET_ITEM(rows, (Py_ssize_t)r, row);
    }
    free(labels); free(tot); free(order); free(rank); free(gid); free(first); free(count);
    return Py_BuildValue("(nN)", (Py_ssize_t)ng, rows);
}

static int parse_nets(PyObject *obj, struct net *nets, int *n) {
    *n = 0;
    if (obj == Py_None) return 0;
    if (!PyTuple_Check(obj) || PyTuple_GET_SIZE(obj) > 64) {
        PyErr_SetString(PyExc_ValueError, "nets must be a tuple of at most 64 (family, packed, prefix)");
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(obj); i++) {
        int fam, prefix;
        const char *addr;
        Py_ssize_t alen;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(obj, i), "iy#i", &fam, &addr, &alen, &prefix)) return -1;
        if (alen > 16 || prefix < 0 || prefix > alen * 8) { PyErr_SetString(PyExc_ValueError, "bad net"); return -1; }
        nets[i].family = fam == 6 ? AF_INET6 : AF_INET;
        memset(nets[i].addr, 0, 16);
        memcpy(nets[i].addr, addr, alen);
        nets[i].prefix = prefix;
        (*n)++;
    }
    return 0;
}

static int agg_init(Aggregator *a, PyObject *args, PyObject *kw) {
    PyObject *fields, *states, *protos, *src, *dst;
    long port;
    if (!PyArg_ParseTuple(args, "O!OOlOO", &PyTuple_Type, &fields, &states, &protos, &port, &src, &dst)) return -1;
    a->nfields = (int)PyTuple_GET_SIZE(fields);
    if (a->nfields > NFIELDS) { PyErr_SetString(PyExc_ValueError, "too many fields"); return -1; }
    for (int i = 0; i < a->nfields; i++) {
        long f = PyLong_AsLong(PyTuple_GET_ITEM(fields, i));
        if (f < 0 || f >= NFIELDS) { if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "bad field"); return -1; }
        a->fields[i] = (int)f;
    }
    a->states = states == Py_None ? NULL : states;
    a->protos = protos == Py_None ? NULL : protos;
    Py_XINCREF(a->states);
    Py_XINCREF(a->protos);
    a->port = port;
    if (parse_nets(src, a->src_nets, &a->nsrc) < 0 || parse_nets(dst, a->dst_nets, &a->ndst) < 0) return -1;
    return 0;
}

static void agg_dealloc(Aggregator *a) {
    for (size_t i = 0; i < a->nblocks; i++) free(a->blocks[i]);
    free(a->blocks);
    map_free(a->slots, a->rcap * sizeof(slot));
    map_free(a->sums, (a->rcap ? a->rcap : 1) * sizeof(sums));
    map_free(a->index, a->cap * sizeof(uint64_t));
    Py_XDECREF(a->states);
    Py_XDECREF(a->protos);
    Py_TYPE(a)->tp_free((PyObject *)a);
}

static PyObject *agg_get_matched(Aggregator *a, void *c) { return PyLong_FromLongLong(a->matched); }
static PyObject *agg_get_total(Aggregator *a, void *c) { return PyLong_FromLongLong(a->total); }
static PyObject *agg_get_accounting(Aggregator *a, void *c) { return PyBool_FromLong(a->accounting); }
static PyObject *agg_get_noise(Aggregator *a, void *c) { return PyBool_FromLong(a->noise); }
static PyObject *agg_get_binary_line(Aggregator *a, void *c) { return PyLong_FromLongLong(a->binary_line); }

static PyObject *agg_sample_every(Aggregator *a, PyObject *args) {
    long long n;
    if (!PyArg_ParseTuple(args, "L", &n)) return NULL;
    if (n < 1) { PyErr_SetString(PyExc_ValueError, "sample_every needs n >= 1"); return NULL; }
    a->every = n;
    a->tick = 0;
    Py_RETURN_NONE;
}

static PyMethodDef agg_methods[] = {
    {"sample_every", (PyCFunction)agg_sample_every, METH_VARARGS,
     "sample_every(n): count only the 1st, (n+1)-th, ... entry read from now on"},
    {"feed", (PyCFunction)agg_feed, METH_VARARGS, "feed(buf, skip_first_bad=False) -> (lines, bad, first bad line)"},
    {"feed_netlink", (PyCFunction)agg_feed_netlink, METH_VARARGS,
     "feed_netlink(buf) -> (entries, malformed messages, done)"},
    {"result", (PyCFunction)agg_result, METH_NOARGS, "{(key, label): [count, opk, ob, rpk, rb]}"},
    {"merge", (PyCFunction)agg_merge, METH_VARARGS, "merge(other, prefix=b'') adds other's counts, keys prefixed"},
    {"top", (PyCFunction)agg_top, METH_VARARGS, "top(limit) -> (groups, rows)"},
    {NULL}
};

static PyGetSetDef agg_getset[] = {
    {"matched", (getter)agg_get_matched, NULL, "entries that passed the filters", NULL},
    {"total", (getter)agg_get_total, NULL, "entries read", NULL},
    {"accounting", (getter)agg_get_accounting, NULL, "an entry had packets=/bytes= counters", NULL},
    {"noise", (getter)agg_get_noise, NULL, "an unreadable line was conntrack-tools' stderr", NULL},
    {"binary_line", (getter)agg_get_binary_line, NULL, "the last feed's first line with a NUL byte, or 0", NULL},
    {NULL}
};

static PyTypeObject AggregatorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ctdoctor.listing._fastscan.Aggregator",
    .tp_basicsize = sizeof(Aggregator),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)agg_init,
    .tp_dealloc = (destructor)agg_dealloc,
    .tp_methods = agg_methods,
    .tp_getset = agg_getset,
};

/* netlink_done(buf) -> whether the buffer holds NLMSG_DONE (the end of a dump); an NLMSG_ERROR
   with an error raises OSError. The headers only: the dump's reader asks it of every buffer. */
static PyObject *netlink_done(PyObject *self, PyObject *args) {
    Py_buffer pb;
    if (!PyArg_ParseTuple(args, "y*", &pb)) return NULL;
    const unsigned char *p = pb.buf;
    Py_ssize_t n = pb.len, off = 0;
    int done = 0, err = 0;
    while (off + 16 <= n) {
        uint32_t len; uint16_t type;
        memcpy(&len, p + off, 4); memcpy(&type, p + off + 4, 2);
        if (len < 16 || off + len > n) break;
        if (type == 3) { done = 1; break; }
        if (type == 2 && len >= 20) { int32_t x; memcpy(&x, p + off + 16, 4); if (x) { err = -x; break; } }
        off += (len + 3) & ~3;
    }
    PyBuffer_Release(&pb);
    if (err) { errno = err; return PyErr_SetFromErrno(PyExc_OSError); }
    return PyBool_FromLong(done);
}

/* drain_socket(fd, cap) -> (bytes, lost): every datagram waiting on a non-blocking netlink socket,
 * up to about cap bytes, in one call without the GIL. Conntrack events come one message per
 * datagram: one recv() each from Python costs more than the event. Each datagram is padded to
 * 4 bytes so the result parses as one netlink message stream. lost: ENOBUFS was reported. */
static PyObject *drain_socket(PyObject *self, PyObject *args) {
    int fd; Py_ssize_t cap;
    if (!PyArg_ParseTuple(args, "in", &fd, &cap)) return NULL;
    if (cap < 65536) cap = 65536;
    char *buf = malloc((size_t)cap);
    if (!buf) return PyErr_NoMemory();
    Py_ssize_t used = 0; int err = 0, lost = 0;
    Py_BEGIN_ALLOW_THREADS
    while (cap - used >= 65536) {
        ssize_t n = recv(fd, buf + used, (size_t)(cap - used), MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == ENOBUFS) { lost = 1; continue; }
            if (errno != EAGAIN && errno != EWOULDBLOCK) err = errno;
            break;
        }
        if (n == 0) break;
        used += n;
        while (used & 3) buf[used++] = 0;
    }
    Py_END_ALLOW_THREADS
    if (err) { free(buf); errno = err; return PyErr_SetFromErrno(PyExc_OSError); }
    PyObject *r = Py_BuildValue("(y#O)", buf, used, lost ? Py_True : Py_False);
    free(buf);
    return r;
}

/* read_full(fd, buffer) -> bytes read: read() until the buffer is full or the end, without the GIL.
 * /proc/net/nf_conntrack gives at most a page per read(): from Python each of those would take the
 * GIL back (and wait up to a switch interval for it while another thread runs Python). */
static PyObject *read_full(PyObject *self, PyObject *args) {
    int fd; Py_buffer pb;
    if (!PyArg_ParseTuple(args, "iw*", &fd, &pb)) return NULL;
    char *p = pb.buf; Py_ssize_t got = 0, len = pb.len; int err = 0;
    Py_BEGIN_ALLOW_THREADS
    while (got < len) {
        ssize_t n = read(fd, p + got, (size_t)(len - got));
        if (n < 0) {
            if (errno == EINTR) continue;
            err = errno;
            break;
        }
        if (n == 0) break;
        got += n;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&pb);
    if (err) { errno = err; return PyErr_SetFromErrno(PyExc_OSError); }
    return PyLong_FromSsize_t(got);
}

static PyMethodDef mod_methods[] = {
    {"feed_many", feed_many, METH_VARARGS, "feed_many((agg, ...), buf, skip_first_bad=False) -> (lines, bad, first)"},
    {"netlink_feed", netlink_feed, METH_VARARGS, "netlink_feed((agg, ...), buf) -> (entries, malformed, done)"},
    {"netlink_select", netlink_select, METH_VARARGS,
     "netlink_select(agg, buf, protect_established, seq, ack_every=1) -> (entries, matched, protected, malformed, "
     "done, delete requests)"},
    {"scan_fields", scan_fields, METH_VARARGS, "scan_fields(line, how) -> scan.S_* fields or None (tests)"},
    {"netlink_done", netlink_done, METH_VARARGS, "netlink_done(buf) -> whether it holds NLMSG_DONE"},
    {"read_full", read_full, METH_VARARGS, "read_full(fd, buffer) -> bytes read (until full or the end; no GIL)"},
    {"drain_socket", drain_socket, METH_VARARGS, "drain_socket(fd, cap) -> (datagrams padded to 4 bytes, enobufs)"},
    {NULL}
};

static struct PyModuleDef mod = { PyModuleDef_HEAD_INIT, "_fastscan", "conntrack listing aggregator", -1, mod_methods };

PyMODINIT_FUNC PyInit__fastscan(void) {
    if (PyType_Ready(&AggregatorType) < 0) return NULL;
    PyObject *m = PyModule_Create(&mod);
    if (!m) return NULL;
    Py_INCREF(&AggregatorType);
    PyModule_AddObject(m, "Aggregator", (PyObject *)&AggregatorType);
    return m;
}
