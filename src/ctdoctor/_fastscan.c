/*
 * _fastscan: optional accelerator for `ctdoctor top`.
 *
 * Scans conntrack listing text (/proc/net/nf_conntrack, conntrack -L
 * [-o extended]) and aggregates entries by a key made of selected fields,
 * keeping per (key, state label) the count and the accounting sums. It must
 * give exactly what ctdoctor.top.PyAggregator gives (tests compare both);
 * ctdoctor works without it.
 *
 * Aggregator(fields, states, protos, port, src_nets, dst_nets)
 *   fields:   tuple of field ids (see FIELD_* below) forming the key
 *   states:   tuple of bytes labels to keep, or None
 *   protos:   tuple of bytes protocol names to keep, or None
 *   port:     orig sport or dport to match, or -1
 *   src_nets, dst_nets: tuple of (family, packed address, prefix) or None
 * .feed(buf, skip_first_bad) -> (lines, bad lines, first bad line or 0)
 * .result() -> {(key bytes, label bytes): [count, opk, ob, rpk, rb]}
 * .matched, .total
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
    int unreplied, assured, offload, hw_offload;
    unsigned long long opk, ob, rpk, rb;
} entry;

typedef struct {
    char *key;          /* key bytes, then label bytes */
    uint32_t klen, llen;
    uint64_t hash;      /* of key and label */
    uint64_t khash;     /* of the key alone */
    long long count;
    unsigned long long opk, ob, rpk, rb;
} slot;

typedef struct {
    PyObject_HEAD
    int fields[NFIELDS];
    int nfields;
    PyObject *states;   /* tuple of bytes or NULL */
    PyObject *protos;
    long port;
    int nsrc, ndst;
    struct net { int family; unsigned char addr[16]; int prefix; } src_nets[64], dst_nets[64];
    slot *slots;        /* records, dense: used of rcap */
    size_t rcap, used;
    uint32_t *index;    /* open addressing: record number + 1, 0 = empty; cap entries */
    size_t cap;
    char **blocks;      /* arena for key bytes: freed all at once */
    size_t nblocks, bused, bcap;
    long long matched, total;
} Aggregator;

#define BLOCK (1 << 20)
#define PROTO_MAX 32
#define STATE_MAX 32
#define U64MAX 18446744073709551615ULL

static char *arena_alloc(void *ap, size_t n);

static uint64_t fnv(const char *p, size_t n, uint64_t h) {
    for (size_t i = 0; i < n; i++) { h ^= (unsigned char)p[i]; h *= 1099511628211ULL; }
    return h;
}

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

static int is_state_tok(const char *p, Py_ssize_t n) {
    if (n <= 0 || n > STATE_MAX) return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || c == '_')) return 0;
    }
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
        /* the key, told apart by its length first (this loop is the hot path) */
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

static char *arena_alloc(void *ap, size_t n) {
    Aggregator *a = ap;
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

static int grow(Aggregator *a) {
    size_t ncap = a->cap ? a->cap * 2 : 4096;
    if (ncap > 0xFFFFFFFFULL) return -1;  /* record numbers are 32-bit */
    uint32_t *ni = calloc(ncap, sizeof(uint32_t));
    if (!ni) return -1;
    for (size_t i = 0; i < a->used; i++) {
        size_t j = a->slots[i].hash & (ncap - 1);
        while (ni[j]) j = (j + 1) & (ncap - 1);
        ni[j] = (uint32_t)(i + 1);
    }
    free(a->index);
    a->index = ni;
    a->cap = ncap;
    return 0;
}

/* a new record at the end of the dense array; returns NULL on no memory */
static slot *new_record(Aggregator *a, size_t j) {
    if (a->used == a->rcap) {
        size_t nr = a->rcap ? a->rcap + a->rcap / 2 : 4096;
        slot *ns = realloc(a->slots, nr * sizeof(slot));
        if (!ns) return NULL;
        a->slots = ns;
        a->rcap = nr;
    }
    a->index[j] = (uint32_t)(a->used + 1);
    return &a->slots[a->used++];
}

#define FNV0 1469598103934665603ULL

static int add_counts(Aggregator *a, const char *pre, size_t plen, const char *key, size_t klen, span label,
                      long long cnt, unsigned long long opk, unsigned long long ob, unsigned long long rpk,
                      unsigned long long rb) {
    if ((a->used + 1) * 10 >= a->cap * 7 && grow(a) < 0) return -1;
    uint64_t kh = fnv(key, klen, fnv(pre, plen, FNV0));
    uint64_t h = fnv(label.p, label.n, kh);
    size_t tl = plen + klen;
    size_t j = h & (a->cap - 1);
    while (a->index[j]) {
        slot *s = &a->slots[a->index[j] - 1];
        if (s->hash == h && s->klen == tl && s->llen == (uint32_t)label.n && memcmp(s->key, pre, plen) == 0 &&
            memcmp(s->key + plen, key, klen) == 0 && memcmp(s->key + tl, label.p, label.n) == 0) {
            s->count += cnt;
            s->opk = sat_add(s->opk, opk); s->ob = sat_add(s->ob, ob);
            s->rpk = sat_add(s->rpk, rpk); s->rb = sat_add(s->rb, rb);
            return 0;
        }
        j = (j + 1) & (a->cap - 1);
    }
    slot *s = new_record(a, j);
    if (!s) return -1;
    s->key = arena_alloc(a, tl + label.n + 1);
    if (!s->key) return -1;
    memcpy(s->key, pre, plen);
    memcpy(s->key + plen, key, klen);
    memcpy(s->key + tl, label.p, label.n);
    s->klen = (uint32_t)tl; s->llen = (uint32_t)label.n; s->hash = h; s->khash = kh;
    s->count = cnt; s->opk = opk; s->ob = ob; s->rpk = rpk; s->rb = rb;
    return 0;
}

static void key_put(char *key, size_t *k, size_t cap, const char *p, size_t n) {
    if (*k + n > cap) n = cap - *k;  /* cannot happen: every field is bounded */
    memcpy(key + *k, p, n);
    *k += n;
}

/* 0 taken or filtered out, -1 no memory */
static int take(Aggregator *a, entry *e) {
    char key[1024];
    size_t k = 0;
    span label = label_of(e);
    a->total++;
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
        if (f) key_put(key, &k, sizeof key, "\x1f", 1);
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
                if (!inet_ntop(AF_INET6, e->bin[ai], v6, sizeof v6)) v6[0] = 0;
                p = v6; n = strlen(v6);
            } else { p = e->addr[ai].p; n = (size_t)e->addr[ai].n; }
        }
        key_put(key, &k, sizeof key, p, n);
    }
    return add_counts(a, "", 0, key, k, label, 1, e->opk, e->ob, e->rpk, e->rb);
}

/* feed(buf, skip_first_bad=False) -> (lines, bad lines, first bad line or 0) */
static PyObject *agg_feed(Aggregator *a, PyObject *args) {
    Py_buffer buf;
    int skip_first_bad = 0;
    if (!PyArg_ParseTuple(args, "y*|p", &buf, &skip_first_bad)) return NULL;
    const char *p = buf.buf, *end = p + buf.len;
    long long lines = 0, bad = 0, first_bad = 0;
    int first = 1, nomem = 0;
    entry e;
    Py_BEGIN_ALLOW_THREADS
    while (p < end) {
        const char *nl = memchr(p, '\n', end - p);
        const char *le = nl ? nl : end;
        lines++;
        const char *s = p;
        while (s < le && (*s == ' ' || *s == '\r')) s++;
        const char *te = le;
        while (te > s && (te[-1] == ' ' || te[-1] == '\r')) te--;
        if (s < te) {
            if (parse_line(s, te, &e) < 0) {
                if (!(first && skip_first_bad)) { bad++; if (!first_bad) first_bad = lines; }
            } else if (take(a, &e) < 0) {
                nomem = 1;
                break;
            }
            first = 0;
        }
        p = nl ? nl + 1 : end;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf);
    if (nomem) return PyErr_NoMemory();
    return Py_BuildValue("(LLL)", lines, bad, first_bad);
}

static PyObject *agg_result(Aggregator *a, PyObject *noargs) {
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    for (size_t i = 0; i < a->used; i++) {
        slot *s = &a->slots[i];
        PyObject *k = Py_BuildValue("(y#y#)", s->key, (Py_ssize_t)s->klen, s->key + s->klen, (Py_ssize_t)s->llen);
        PyObject *v = Py_BuildValue("[LKKKK]", s->count, s->opk, s->ob, s->rpk, s->rb);
        if (!k || !v || PyDict_SetItem(d, k, v) < 0) { Py_XDECREF(k); Py_XDECREF(v); Py_DECREF(d); return NULL; }
        Py_DECREF(k); Py_DECREF(v);
    }
    return d;
}

static PyTypeObject AggregatorType;

static PyObject *agg_merge(Aggregator *a, PyObject *args) {
    PyObject *o;
    const char *pre = "";
    Py_ssize_t plen = 0;
    if (!PyArg_ParseTuple(args, "O!|y#", &AggregatorType, &o, &pre, &plen)) return NULL;
    Aggregator *b = (Aggregator *)o;
    for (size_t i = 0; i < b->used; i++) {
        slot *s = &b->slots[i];
        span lab = { s->key + s->klen, s->llen };
        if (add_counts(a, pre, plen, s->key, s->klen, lab, s->count, s->opk, s->ob, s->rpk, s->rb) < 0)
            return PyErr_NoMemory();
    }
    a->matched += b->matched;
    a->total += b->total;
    Py_RETURN_NONE;
}

typedef struct { size_t first; long long count; unsigned long long opk, ob, rpk, rb; long rank; } group;

static Aggregator *sort_ctx;
static group *sort_groups;

static int cmp_group(const void *x, const void *y) {
    const group *g = &sort_groups[*(const size_t *)x], *h = &sort_groups[*(const size_t *)y];
    if (g->count != h->count) return g->count > h->count ? -1 : 1;
    slot *a = &sort_ctx->slots[g->first], *b = &sort_ctx->slots[h->first];
    size_t n = a->klen < b->klen ? a->klen : b->klen;
    int c = memcmp(a->key, b->key, n);
    if (c) return c;
    return a->klen < b->klen ? -1 : (a->klen > b->klen ? 1 : 0);
}

static size_t find_group(Aggregator *a, group *gs, size_t *tab, size_t tcap, slot *s, int create, size_t *ng) {
    size_t j = s->khash & (tcap - 1);
    while (tab[j] != (size_t)-1) {
        slot *f = &a->slots[gs[tab[j]].first];
        if (f->khash == s->khash && f->klen == s->klen && memcmp(f->key, s->key, s->klen) == 0) return tab[j];
        j = (j + 1) & (tcap - 1);
    }
    if (!create) return (size_t)-1;
    tab[j] = (*ng)++;
    return tab[j];
}

/* top(limit) -> (groups, [(key, count, opk, ob, rpk, rb, {label: count})]) sorted by count, then key bytes */
static PyObject *agg_top(Aggregator *a, PyObject *args) {
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "n", &limit)) return NULL;
    size_t tcap = 16;
    while (tcap < a->used * 2 + 2) tcap <<= 1;
    size_t *tab = malloc(tcap * sizeof(size_t));
    group *gs = calloc(a->used + 1, sizeof(group));
    size_t ng = 0;
    if (!tab || !gs) { free(tab); free(gs); return PyErr_NoMemory(); }
    memset(tab, 0xff, tcap * sizeof(size_t));
    for (size_t i = 0; i < a->used; i++) {
        slot *s = &a->slots[i];
        size_t before = ng;
        size_t g = find_group(a, gs, tab, tcap, s, 0, &ng);
        if (g == (size_t)-1) {
            gs[ng].first = i;
            g = find_group(a, gs, tab, tcap, s, 1, &ng);
            gs[g].rank = -1;
        }
        (void)before;
        gs[g].count += s->count; gs[g].opk = sat_add(gs[g].opk, s->opk); gs[g].ob = sat_add(gs[g].ob, s->ob);
        gs[g].rpk = sat_add(gs[g].rpk, s->rpk); gs[g].rb = sat_add(gs[g].rb, s->rb);
    }
    size_t *order = malloc((ng + 1) * sizeof(size_t));
    if (!order) { free(tab); free(gs); return PyErr_NoMemory(); }
    sort_ctx = a; sort_groups = gs;
    size_t n = (limit > 0 && (size_t)limit < ng) ? (size_t)limit : ng;
    if (n == ng) {
        for (size_t i = 0; i < ng; i++) order[i] = i;
        qsort(order, ng, sizeof(size_t), cmp_group);
    } else {
        /* keep the n best in a heap whose root is the worst of them */
        size_t hn = 0;
        for (size_t i = 0; i < ng; i++) {
            if (hn < n) {
                size_t c = hn++;
                order[c] = i;
                while (c > 0) {
                    size_t p = (c - 1) / 2;
                    if (cmp_group(&order[c], &order[p]) <= 0) break;
                    size_t t = order[c]; order[c] = order[p]; order[p] = t; c = p;
                }
            } else if (cmp_group(&i, &order[0]) < 0) {
                order[0] = i;
                size_t c = 0;
                for (;;) {
                    size_t l = 2 * c + 1, r = l + 1, m = c;
                    if (l < hn && cmp_group(&order[l], &order[m]) > 0) m = l;
                    if (r < hn && cmp_group(&order[r], &order[m]) > 0) m = r;
                    if (m == c) break;
                    size_t t = order[c]; order[c] = order[m]; order[m] = t; c = m;
                }
            }
        }
        qsort(order, n, sizeof(size_t), cmp_group);
    }
    PyObject *rows = PyList_New(n);
    PyObject **labels = calloc(n + 1, sizeof(PyObject *));
    if (!rows || !labels) { free(tab); free(gs); free(order); Py_XDECREF(rows); free(labels); return PyErr_NoMemory(); }
    for (size_t r = 0; r < n; r++) { gs[order[r]].rank = (long)r; labels[r] = PyDict_New(); }
    for (size_t i = 0; i < a->used; i++) {
        slot *s = &a->slots[i];
        size_t g = find_group(a, gs, tab, tcap, s, 0, &ng);
        if (gs[g].rank < 0) continue;
        PyObject *k = PyBytes_FromStringAndSize(s->key + s->klen, s->llen);
        PyObject *v = PyLong_FromLongLong(s->count);
        PyDict_SetItem(labels[gs[g].rank], k, v);
        Py_DECREF(k); Py_DECREF(v);
    }
    for (size_t r = 0; r < n; r++) {
        group *g = &gs[order[r]];
        slot *f = &a->slots[g->first];
        PyObject *row = Py_BuildValue("(y#LKKKKN)", f->key, (Py_ssize_t)f->klen, g->count, g->opk, g->ob, g->rpk,
                                      g->rb, labels[r]);
        PyList_SET_ITEM(rows, r, row);
    }
    free(labels); free(tab); free(order);
    PyObject *res = Py_BuildValue("(nN)", (Py_ssize_t)ng, rows);
    free(gs);
    return res;
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
    free(a->slots);
    free(a->index);
    Py_XDECREF(a->states);
    Py_XDECREF(a->protos);
    Py_TYPE(a)->tp_free((PyObject *)a);
}

static PyObject *agg_get_matched(Aggregator *a, void *c) { return PyLong_FromLongLong(a->matched); }
static PyObject *agg_get_total(Aggregator *a, void *c) { return PyLong_FromLongLong(a->total); }

static PyMethodDef agg_methods[] = {
    {"feed", (PyCFunction)agg_feed, METH_VARARGS, "feed(buf, skip_first_bad=False) -> (lines, bad_line)"},
    {"result", (PyCFunction)agg_result, METH_NOARGS, "{(key, label): [count, opk, ob, rpk, rb]}"},
    {"merge", (PyCFunction)agg_merge, METH_VARARGS, "merge(other, prefix=b'') adds other's counts, keys prefixed"},
    {"top", (PyCFunction)agg_top, METH_VARARGS, "top(limit) -> (groups, rows)"},
    {NULL}
};

static PyGetSetDef agg_getset[] = {
    {"matched", (getter)agg_get_matched, NULL, "entries that passed the filters", NULL},
    {"total", (getter)agg_get_total, NULL, "entries read", NULL},
    {NULL}
};

static PyTypeObject AggregatorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ctdoctor._fastscan.Aggregator",
    .tp_basicsize = sizeof(Aggregator),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)agg_init,
    .tp_dealloc = (destructor)agg_dealloc,
    .tp_methods = agg_methods,
    .tp_getset = agg_getset,
};

/* ---- ctnetlink dump -> listing lines (as ctnetlink.decode_entry + entries.format_entry "extended") ---- */

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

typedef struct { char buf[512]; size_t n; } sbuf;
static void sb_add(sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(b->buf + b->n, sizeof(b->buf) - b->n, fmt, ap);
    va_end(ap);
    if (w > 0) b->n += (size_t)w < sizeof(b->buf) - b->n ? (size_t)w : sizeof(b->buf) - b->n - 1;
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

/* one tuple: "src=.. dst=.. " + ports/icmp/gre; returns protonum or -1 */
static int put_tuple(sbuf *b, nla t, int *zone) {
    nla a[8], ip[8], pr[16];
    nla_parse(t.p, t.n, a, 8);
    *zone = -1;
    if (!a[1].p) return -1;
    nla_parse(a[1].p, a[1].n, ip, 8);
    char s[64], d[64];
    if (ip[1].p && ip[2].p && ip[1].n == 4 && ip[2].n == 4) {
        inet_ntop(AF_INET, ip[1].p, s, sizeof s); inet_ntop(AF_INET, ip[2].p, d, sizeof d);
    } else if (ip[3].p && ip[4].p && ip[3].n == 16 && ip[4].n == 16) {
        inet_ntop(AF_INET6, ip[3].p, s, sizeof s); inet_ntop(AF_INET6, ip[4].p, d, sizeof d);
    } else return -1;
    sb_add(b, "src=%s dst=%s ", s, d);
    int proto = 0;
    if (a[2].p) {
        nla_parse(a[2].p, a[2].n, pr, 16);
        if (pr[1].p) proto = pr[1].p[0];
        if (proto == 6 || proto == 17 || proto == 136 || proto == 33 || proto == 132) {
            if (pr[2].p && pr[3].p) sb_add(b, "sport=%u dport=%u ", be16(pr[2].p), be16(pr[3].p));
        } else if (proto == 47) {
            if (pr[2].p && pr[3].p) sb_add(b, "srckey=0x%x dstkey=0x%x ", be16(pr[2].p), be16(pr[3].p));
        } else if (proto == 1 && pr[5].p) {
            sb_add(b, "type=%u code=%u id=%u ", pr[5].p[0], pr[6].p ? pr[6].p[0] : 0, pr[4].p ? be16(pr[4].p) : 0);
        } else if (proto == 58 && pr[8].p) {
            sb_add(b, "type=%u code=%u id=%u ", pr[8].p[0], pr[9].p ? pr[9].p[0] : 0, pr[7].p ? be16(pr[7].p) : 0);
        }
    }
    if (a[3].p && a[3].n >= 2) *zone = (int)be16(a[3].p);
    return proto;
}

static void put_counters(sbuf *b, nla c) {
    nla k[4];
    if (!c.p) return;
    nla_parse(c.p, c.n, k, 4);
    if (k[1].p && k[2].p) sb_add(b, "packets=%llu bytes=%llu ", be64(k[1].p), be64(k[2].p));
}

/* netlink_lines(buf) -> (lines bytes, done bool) */
static PyObject *netlink_lines(PyObject *self, PyObject *args) {
    Py_buffer pb;
    if (!PyArg_ParseTuple(args, "y*", &pb)) return NULL;
    const unsigned char *p = pb.buf;
    Py_ssize_t n = pb.len, off = 0;
    size_t cap = (size_t)n * 2 + 1024, used = 0;
    char *out = malloc(cap);
    int done = 0, err = 0;
    if (!out) { PyBuffer_Release(&pb); return PyErr_NoMemory(); }
    while (off + 16 <= n) {
        uint32_t len; uint16_t type;
        memcpy(&len, p + off, 4); memcpy(&type, p + off + 4, 2);
        if (len < 16 || off + len > n) break;
        if (type == 3) { done = 1; break; }
        if (type == 2) { int32_t e; memcpy(&e, p + off + 16, 4); if (e) { err = -e; break; } }
        if ((type & 0xff00) == (1 << 8) && len >= 20) {
            int family = p[off + 16];
            nla a[32];
            nla_parse(p + off + 20, (int)len - 20, a, 32);
            sbuf b; b.n = 0;
            sbuf t1, t2; t1.n = t2.n = 0;
            int zo, zr;
            int proto = a[1].p ? put_tuple(&t1, a[1], &zo) : -1;
            int proto2 = a[2].p ? put_tuple(&t2, a[2], &zr) : -1;
            if (proto >= 0 && proto2 >= 0) {
                unsigned long status = a[3].p ? be32(a[3].p) : 0;
                int offl = (status & (1 << 15)) ? 2 : (status & (1 << 14)) ? 1 : 0;
                const char *l3 = family == AF_INET ? "ipv4" : "ipv6";
                sb_add(&b, "%-8s %d %-8s %d ", l3, family == AF_INET ? 2 : 10, proto_name(proto), proto);
                if (!offl && a[7].p) sb_add(&b, "%lu ", be32(a[7].p));
                if (a[4].p) {
                    nla pi[4], st[4];
                    nla_parse(a[4].p, a[4].n, pi, 4);
                    const char **names = NULL; int nn = 0, k = 0;
                    if (pi[1].p) { names = TCPS; nn = 10; k = 1; }
                    else if (pi[3].p) { names = SCTPS; nn = 10; k = 3; }
                    else if (pi[2].p) { names = DCCPS; nn = 10; k = 2; }
                    if (names) {
                        nla_parse(pi[k].p, pi[k].n, st, 4);
                        if (st[1].p) {
                            int i = st[1].p[0];
                            if (i < nn) sb_add(&b, "%s ", names[i]); else sb_add(&b, "%d ", i);
                        }
                    }
                }
                sb_add(&b, "%.*s", (int)t1.n, t1.buf);
                if (zo >= 0) sb_add(&b, "zone-orig=%d ", zo);
                put_counters(&b, a[9]);
                if (!(status & (1 << 1))) sb_add(&b, "[UNREPLIED] ");
                sb_add(&b, "%.*s", (int)t2.n, t2.buf);
                if (zr >= 0) sb_add(&b, "zone-reply=%d ", zr);
                put_counters(&b, a[10]);
                if (offl == 2) sb_add(&b, "[HW_OFFLOAD] ");
                else if (offl == 1) sb_add(&b, "[OFFLOAD] ");
                else if (status & (1 << 2)) sb_add(&b, "[ASSURED] ");
                if (a[8].p) sb_add(&b, "mark=%lu ", be32(a[8].p));
                if (a[19].p) {
                    nla sc[4];
                    nla_parse(a[19].p, a[19].n, sc, 4);
                    if (sc[1].p) sb_add(&b, "secctx=%.*s ", (int)strnlen((const char *)sc[1].p, sc[1].n), sc[1].p);
                }
                if (a[18].p) sb_add(&b, "zone=%u ", be16(a[18].p));
                sb_add(&b, "use=%lu", a[11].p ? be32(a[11].p) : 1UL);
                if (a[12].p) sb_add(&b, " id=%lu", be32(a[12].p));
                sb_add(&b, "\n");
                if (used + b.n > cap) {
                    cap = (used + b.n) * 2;
                    char *no = realloc(out, cap);
                    if (!no) { free(out); PyBuffer_Release(&pb); return PyErr_NoMemory(); }
                    out = no;
                }
                memcpy(out + used, b.buf, b.n);
                used += b.n;
            }
        }
        off += (len + 3) & ~3;
    }
    PyBuffer_Release(&pb);
    if (err) { free(out); errno = err; return PyErr_SetFromErrno(PyExc_OSError); }
    PyObject *r = Py_BuildValue("(y#O)", out, (Py_ssize_t)used, done ? Py_True : Py_False);
    free(out);
    return r;
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

static PyMethodDef mod_methods[] = {
    {"netlink_lines", netlink_lines, METH_VARARGS, "netlink_lines(buf) -> (listing lines, done)"},
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
