/*
 * fastscan.h: what the files of the C extension ctdoctor.listing._fastscan share.
 *
 * The extension is the fast path of `ctdoctor top` and the doctor's listing summary: it reads
 * conntrack listing text (/proc/net/nf_conntrack, conntrack -L [-o extended]) or ctnetlink
 * dump/event messages and counts entries by a key of selected fields, per (key, state label),
 * with the accounting sums. It must give exactly what ctdoctor.listing.aggregate.PyAggregator gives
 * (tests compare both); ctdoctor works without it.
 *
 * By topic (each file says why it is shaped as it is):
 *   scan.c       the listing grammar: parse_canon (one pass over a line in the exact shape the
 *                kernel and conntrack-tools print) and parse_line (the general rules, the twin
 *                of ctdoctor/listing/grammar.py) for every line parse_canon declines
 *   table.c      the hash table of (key, label) records, its arena, the per-process hash seed
 *   aggregate.c  filters and keys (prepare), batches into the table, reading text
 *   netlink.c    ctnetlink messages: entries into the table, flush's delete requests
 *   top.c        top(limit): records grouped by key, the best groups, their rows
 *   module.c     the Python side: the Aggregator type, the module functions, the busy guard
 *
 * Python objects are made only in module.c and top.c, always under the GIL; every other file
 * works on plain C data, most of it with the GIL released.
 */
#ifndef CTDOCTOR_FASTSCAN_H
#define CTDOCTOR_FASTSCAN_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* The files call each other's functions once per line or entry: hidden, those calls are direct
   (a default-visibility symbol of a shared object is called through the PLT, since another
   library could interpose it). Only PyInit__fastscan is exported (PyMODINIT_FUNC says so). */
#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

enum { F_SRC, F_DST, F_SPORT, F_DPORT, F_STATE, F_PROTO, F_ZONE, F_MARK, F_RSRC, F_RDST, F_L3, NFIELDS };

typedef struct { const char *p; Py_ssize_t n; } span;

/* One entry's key fields, validated and bounded (see ctdoctor/listing/grammar.py for the rules).
   Addresses keep their text and binary form (IPv6 is printed with ntop6 only when a key needs
   it); numbers are spans without leading zeros. */
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

struct net { int family; unsigned char addr[16]; int prefix; };

typedef struct {
    PyObject_HEAD
    int fields[NFIELDS];
    int nfields;
    PyObject *states;   /* tuple of bytes or NULL */
    PyObject *protos;
    long port;
    int nsrc, ndst;
    struct net src_nets[64], dst_nets[64];
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
    int busy;           /* a call works on the table without the GIL: set and cleared under it */
} Aggregator;

/* A record's sums (all 0 when no entry had counters: the array is made on the first one). */
static inline const sums *sums_of(const Aggregator *a, size_t i) {
    static const sums none = {0, 0, 0, 0};
    return a->sums ? &a->sums[i] : &none;
}

#define PROTO_MAX 32
#define STATE_MAX 32
#define U64MAX 18446744073709551615ULL
#define KEYMAX 2048  /* every field is bounded: 11 fields of at most 64 bytes, and a label of 32 */
#define BATCH 16     /* entries looked up together (see take_batch) */

static inline unsigned long long sat_add(unsigned long long a, unsigned long long b) {
    return a > U64MAX - b ? U64MAX : a + b;
}

static inline int span_eq(span s, const char *lit) {
    size_t n = strlen(lit);
    return (size_t)s.n == n && memcmp(s.p, lit, n) == 0;
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

/* The label an entry is counted under: its state, else the flag that stands for one. */
static inline span label_of(const entry *e) {
    span s;
    if (e->state.n) return e->state;
    if (e->hw_offload) { s.p = "HW_OFFLOAD"; s.n = 10; }
    else if (e->offload) { s.p = "OFFLOAD"; s.n = 7; }
    else if (e->unreplied) { s.p = "UNREPLIED"; s.n = 9; }
    else if (e->assured) { s.p = "ASSURED"; s.n = 7; }
    else { s.p = "REPLIED"; s.n = 7; }
    return s;
}

/* ---- hashing: inline, it is on every entry's path ----------------------------------------------- */

/* The per-process random seed (table.c; set once at module init, read-only after). Without it a
   crafted listing could pick keys that share an index slot and make every lookup walk them all. */
extern uint64_t fs_seed;
int fs_seed_init(void);

static inline uint64_t mix64(uint64_t h) {
    h ^= h >> 33; h *= 0xff51afd7ed558ccdULL; h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53ULL; h ^= h >> 33;
    return h;
}

/* 8 bytes a step; keys are short (an address and a state), so this is a few multiplies. The seed
   enters before the first byte, so where two keys collide depends on it. */
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
    return mix64(h ^ seed);
}

static inline uint64_t key_hash(const char *kl, size_t klen, size_t llen) {
    return hash_bytes(kl, klen + llen, fs_seed ^ (uint64_t)klen);  /* the key's length tells key from label */
}

/* ---- scan.c: the listing grammar ---------------------------------------------------------------- */

int parse_line(const char *p, const char *end, entry *e);   /* the general rules; 0 or -1 */
int parse_canon(const char *p, const char *end, entry *e);  /* the canonical shape; 0 or -1 */
int read_line(const char *s, const char *te, entry *e);     /* as feed reads a line */
size_t ntop6(const unsigned char *src, char *out);         /* RFC 5952 text; out: 48 bytes */

/* ---- table.c: the records ----------------------------------------------------------------------- */

int add_counts(Aggregator *a, const char *kl, size_t klen, size_t llen, uint64_t h, long long cnt,
               unsigned long long opk, unsigned long long ob, unsigned long long rpk, unsigned long long rb);
void table_free(Aggregator *a);

/* ---- aggregate.c: entries into tables ----------------------------------------------------------- */

/* An entry made ready for the table: its key and label, their hash, and its counters. */
typedef struct {
    const char *kl;
    size_t klen, llen;
    uint64_t h;
    unsigned long long opk, ob, rpk, rb;
} ready;

/* What a read of text found besides entries. */
typedef struct { long long lines, bad, first_bad, binary_line; int noise, nomem; } text_read;

int prepare(Aggregator *a, const entry *e, char *key, ready *r);
int take_batch(Aggregator **aggs, int na, entry *ents, int n, char *keys);
void feed_text(Aggregator **aggs, int na, const char *p, const char *end, int skip_first_bad, char *keys,
               text_read *out);
int merge_into(Aggregator *a, const Aggregator *b, const char *pre, size_t plen);  /* 0, -1 nomem, -2 too long */

/* ---- netlink.c: ctnetlink messages -------------------------------------------------------------- */

typedef struct { long long entries, malformed; int done, err, nomem; } nl_read;
typedef struct { long long entries, matched, protected_, malformed; int done, err, nomem; } nl_select;

void feed_nl(Aggregator **aggs, int na, const unsigned char *p, Py_ssize_t n, char *keys, nl_read *out);
/* flush's selection: the CT_DELETE requests into *out (malloc'd, *used bytes) */
void select_nl(Aggregator *a, const unsigned char *p, Py_ssize_t n, int protect, unsigned int seq,
               unsigned int ack_every, unsigned char **out, size_t *used, nl_select *res);
int nl_scan_done(const unsigned char *p, Py_ssize_t n, int *err);  /* NLMSG_DONE seen; *err an NLMSG_ERROR's */

/* ---- top.c -------------------------------------------------------------------------------------- */

PyObject *top_rows(Aggregator *a, Py_ssize_t limit);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif
