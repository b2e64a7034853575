/* The DNS server's answers replayed by the kernel (dns.kernel_cache).
 *
 * At tc ingress of the device the home's queries reach netns vproxy on, a
 * plain UDP/IPv4 query (one question, no other records but a bare EDNS 0
 * OPT: no options, no DO bit) is looked up by (client group, qtype,
 * qclass, lower-cased wire name).  A fresh entry is what the server sent
 * for that question: its records and TTL offsets, written by the server
 * (kernel_cache.py) when it answered from its cache.  The answer is built
 * in the query's own skb, as the server's `wire.render` would: the query's
 * ID and question as sent, RD copied, QR|RA|rcode, the records with every
 * TTL lowered by the entry's age, our OPT when the client sent one; then
 * addresses, ports and MACs swapped, checksums computed, and the frame
 * sent back out of the device it came in on.
 *
 * Everything else goes up untouched (TC_ACT_OK): misses, expired entries,
 * entries of a generation their writer has left (it changed policy), a
 * client the server has not placed in a group, an answer past the
 * client's UDP size (the server sets TC), anything unusual in the query.
 * The kernel decides nothing: the server's policy chose every entry.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define KC_NAME_MAX 255       /* wire name with its final zero, as parse_query allows */
#define KC_BODY_MAX 1024      /* records + our OPT, as stored */
#define KC_TTLS 64            /* TTLs an entry rewrites at most */
#define KC_WRITERS 64         /* the main process and its workers */
#define KC_DESTS 4

#define DNS_QR 0x8000
#define DNS_OPCODE 0x7800
#define DNS_TC 0x0200
#define DNS_RD 0x0100
#define OPT_LEN 11

#define L2 14
#define L3 20
#define L4 8
#define DNS_AT (L2 + L3 + L4)

struct kc_key {
	__u32 group;
	__u16 qtype;
	__u16 qclass;
	__u8 name[KC_NAME_MAX + 1];   /* lower-cased, zero-padded */
};

struct kc_answer {
	__u64 stored_ns;    /* CLOCK_MONOTONIC: the server's time.monotonic() */
	__u64 expires_ns;
	__u32 writer;       /* which process wrote it: kc_gens[writer] must be `gen` */
	__u32 gen;
	__u16 flags;        /* QR | RA | rcode; the query's RD is added */
	__u16 an, ns, ar;   /* counts without our OPT */
	__u16 body_len;     /* the records; our OPT follows them in body[] */
	__u16 ttl_count;
	__u16 edns_max;     /* the server's edns_udp_size */
	__u16 pad;
	__u32 sum_plain;    /* big-endian word sum of body[0:body_len], TTLs as zero */
	__u32 sum_edns;     /* ... of body[0:body_len + 11]: with our OPT */
	__u16 ttl_off[KC_TTLS];   /* from the start of body */
	__u32 ttl[KC_TTLS];       /* as stored */
	__u8 body[KC_BODY_MAX];
};

struct kc_client {
	__u32 group;
	__u32 writer;
	__u32 gen;
	__u32 pad;
	__u64 expires_ns;
};

/* Which destinations the kernel answers as: the gateway's address
 * (dns.intercept: gateway) or any but the fake range (all). */
struct kc_config {
	__u32 dest[KC_DESTS];       /* network order */
	__u32 dest_mask[KC_DESTS];  /* 0 = unused slot unless dest is 0 too: 0/0 is "any" */
	__u32 dests;
	__u32 fake;                 /* never answered as (the relay's range) */
	__u32 fake_mask;
	__u32 pad;
};

enum kc_stat {
	KC_HITS,
	KC_MISSES,       /* a plain query, no fresh entry */
	KC_EXPIRED,
	KC_NO_CLIENT,    /* client not placed in a group (or its placement expired) */
	KC_NOT_PLAIN,    /* a query the kernel does not read: the server does */
	KC_TOO_BIG,
	KC_STAT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct kc_key);
	__type(value, struct kc_answer);
} kc_answers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);               /* client IPv4, network order */
	__type(value, struct kc_client);
} kc_clients SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KC_WRITERS);
	__type(key, __u32);
	__type(value, __u32);
} kc_gens SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kc_config);
} kc_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KC_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} kc_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);               /* client IPv4 */
	__type(value, __u64);             /* answers the kernel gave it */
} kc_client_hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct kc_key);       /* the question answered, its group */
	__type(value, __u64);             /* answers the kernel gave it */
} kc_name_hits SEC(".maps");

/* The question and OPT as received, and the key: 530 bytes would not fit
 * the 512-byte stack.  The question is read from this copy, not from the
 * packet: a packet pointer moved by a variable is refused to a loader
 * without CAP_PERFMON (the DNS server has CAP_BPF and CAP_NET_ADMIN). */
#define KC_RAW (KC_NAME_MAX + 4 + OPT_LEN)

/* Bound a helper's length on the very register the call takes.  The C checks
 * before it are on a copy clang may spill to the stack; 6.1's verifier does
 * not carry what a branch learnt to a spilled copy (6.8 and later do), and
 * refuses the call ("R4 min value is outside of the allowed memory range").
 * The values are already checked, so this never changes one. */
#define KC_BOUND(n, lo, hi) \
	asm volatile("if %0 >= %1 goto +1; %0 = %1; if %0 <= %2 goto +1; %0 = %2" \
		     : "+r"(n) : "i"(lo), "i"(hi))
struct kc_scratch {
	struct kc_key key;
	__u8 raw[KC_RAW + 1];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kc_scratch);
} kc_scratch SEC(".maps");

static __always_inline int count(__u32 what, int verdict)
{
	__u64 *n = bpf_map_lookup_elem(&kc_stats, &what);
	if (n)
		*n += 1;
	return verdict;
}

static __always_inline int writer_current(__u32 writer, __u32 gen)
{
	__u32 *now = bpf_map_lookup_elem(&kc_gens, &writer);
	return now && gen && *now == gen;
}

static __always_inline int answers_as(__u32 daddr)
{
	__u32 zero = 0;
	struct kc_config *c = bpf_map_lookup_elem(&kc_config, &zero);
	if (!c)
		return 0;
	if (c->fake_mask && (daddr & c->fake_mask) == c->fake)
		return 0;
	for (int i = 0; i < KC_DESTS; i++) {
		if (i >= c->dests)
			break;
		if ((daddr & c->dest_mask[i]) == c->dest[i])
			return 1;
	}
	return 0;
}

/* x * 256 mod 0xffff: a part summed from an even offset, placed at an odd one */
static __always_inline __u32 rot8(__u32 x)
{
	return ((x << 8) | (x >> 8)) & 0xffff;
}

static __always_inline __u16 fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

SEC("tc")
int kernel_cache(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + L2;
	struct udphdr *udp = data + L2 + L3;
	__u8 *dns = data + DNS_AT;

	if ((void *)(dns + 12) > end)
		return TC_ACT_OK;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 || ip->version != 4 ||
	    ip->protocol != IPPROTO_UDP || (ip->frag_off & bpf_htons(0x3fff)) ||
	    udp->dest != bpf_htons(53))
		return TC_ACT_OK;
	__u32 ip_len = bpf_ntohs(ip->tot_len);
	__u32 dns_len = bpf_ntohs(udp->len);
	if (dns_len < L4 + 17 || dns_len + L3 != ip_len || ip_len + L2 > skb->len)
		return count(KC_NOT_PLAIN, TC_ACT_OK);
	dns_len -= L4;
	if (!answers_as(ip->daddr))
		return TC_ACT_OK;

	__u16 qflags = bpf_ntohs(*(__u16 *)(dns + 2));
	if ((qflags & (DNS_QR | DNS_OPCODE | DNS_TC)) || *(__u16 *)(dns + 4) != bpf_htons(1) ||
	    *(__u16 *)(dns + 6) || *(__u16 *)(dns + 8) || bpf_ntohs(*(__u16 *)(dns + 10)) > 1)
		return count(KC_NOT_PLAIN, TC_ACT_OK);
	int edns = *(__u16 *)(dns + 10) != 0;

	__u32 saddr = ip->saddr;
	struct kc_client *client = bpf_map_lookup_elem(&kc_clients, &saddr);
	__u64 now = bpf_ktime_get_ns();
	if (!client || client->expires_ns <= now || !writer_current(client->writer, client->gen))
		return count(KC_NO_CLIENT, TC_ACT_OK);

	__u32 zero = 0;
	struct kc_scratch *scratch = bpf_map_lookup_elem(&kc_scratch, &zero);
	if (!scratch)
		return TC_ACT_OK;
	struct kc_key *key = &scratch->key;
	__u8 *raw = scratch->raw;
	__builtin_memset(key, 0, sizeof(*key));
	key->group = client->group;
	__u64 raw_len = dns_len - 12;
	asm volatile("" : "+r"(raw_len));
	if (raw_len < 5 || raw_len > KC_RAW)
		return count(KC_NOT_PLAIN, TC_ACT_OK);
	__u64 n_raw = raw_len;
	KC_BOUND(n_raw, 5, KC_RAW);
	if (bpf_skb_load_bytes(skb, DNS_AT + 12, raw, n_raw))
		return count(KC_NOT_PLAIN, TC_ACT_OK);

	/* The name, byte by byte: a length byte (1-63; a pointer or a reserved
	 * type sends the query up), then that many bytes, lower-cased. */
	__u32 label_left = 0, name_len = 0;
	__u64 qsum = 0;   /* the question as sent, for the answer's checksum */
#pragma unroll
	for (int i = 0; i < KC_NAME_MAX; i++) {
		if (i >= raw_len)
			return count(KC_NOT_PLAIN, TC_ACT_OK);
		__u8 b = raw[i];
		qsum += (i & 1) ? b : (__u32)b << 8;
		if (label_left) {
			if (b >= 'A' && b <= 'Z')
				b += 'a' - 'A';
			label_left--;
		} else if (b == 0) {
			name_len = i + 1;
			break;
		} else if (b > 63) {
			return count(KC_NOT_PLAIN, TC_ACT_OK);
		} else {
			label_left = b;
		}
		key->name[i] = b;
	}
	if (!name_len || name_len > KC_NAME_MAX)
		return count(KC_NOT_PLAIN, TC_ACT_OK);
	__u32 qlen = name_len + 4;
	if (edns) {
		if (qlen + OPT_LEN != raw_len)
			return count(KC_NOT_PLAIN, TC_ACT_OK);
	} else if (qlen != raw_len) {
		return count(KC_NOT_PLAIN, TC_ACT_OK);
	}
	/* after the name: read at a variable offset by the helper (see kc_scratch) */
	/* zeroed: 6.1 without CAP_PERFMON may not read stack a helper might not have written */
	__u8 q[4 + OPT_LEN] = {};
	if (bpf_skb_load_bytes(skb, DNS_AT + 12 + name_len, q, edns ? sizeof(q) : 4))
		return count(KC_NOT_PLAIN, TC_ACT_OK);
	key->qtype = ((__u16)q[0] << 8) | q[1];
	key->qclass = ((__u16)q[2] << 8) | q[3];
	__u32 tail = fold((__u32)key->qtype + key->qclass);
	qsum += (name_len & 1) ? rot8(tail) : tail;
	__u32 client_size = 512;
	if (edns) {
		__u8 *o = q + 4;
		/* root owner, type OPT, extended RCODE 0, version 0, no DO, no options */
		if (o[0] || o[1] || o[2] != 41 || o[5] || o[6] || o[7] || o[8] || o[9] || o[10])
			return count(KC_NOT_PLAIN, TC_ACT_OK);
		client_size = ((__u32)o[3] << 8) | o[4];
		if (client_size < 512)
			client_size = 512;
	}

	struct kc_answer *a = bpf_map_lookup_elem(&kc_answers, key);
	if (!a || !writer_current(a->writer, a->gen))
		return count(KC_MISSES, TC_ACT_OK);
	if (a->expires_ns <= now)
		return count(KC_EXPIRED, TC_ACT_OK);
	__u32 body_len = a->body_len;
	__u32 copy = body_len + (edns ? OPT_LEN : 0);
	__u32 limit = edns ? (client_size < a->edns_max ? client_size : a->edns_max) : 512;
	__u32 new_dns = 12 + qlen + copy;
	if (copy == 0 || copy > KC_BODY_MAX || new_dns > limit || new_dns + L2 + L3 + L4 > 1500)
		return count(KC_TOO_BIG, TC_ACT_OK);

	__u64 age = (now - a->stored_ns) / 1000000000ULL;
	__u16 rflags = bpf_htons(a->flags | (qflags & DNS_RD));
	__u16 counts[5] = {rflags, bpf_htons(1), bpf_htons(a->an), bpf_htons(a->ns),
			   bpf_htons(a->ar + (edns ? 1 : 0))};
	__u32 ttl_count = a->ttl_count;
	__u32 an = a->an, ns = a->ns, ar_out = a->ar + (edns ? 1 : 0);
	__u64 body_sum = a->sum_plain, with_opt = a->sum_edns;
	asm volatile("" : "+r"(with_opt));
	if (edns)
		body_sum = with_opt;
	__u64 ttl_sum = 0;
	__u32 qid = bpf_ntohs(*(__u16 *)dns);

	/* From here on the query is the answer: the frame grows to its size. */
	if (bpf_skb_change_tail(skb, DNS_AT + new_dns, 0))
		return TC_ACT_OK;
	__u32 at = DNS_AT + 12 + qlen;
	/* checked again where the verifier needs it (clang may keep an unchecked copy) */
	__u64 n = copy;
	asm volatile("" : "+r"(n));
	if (n == 0 || n > KC_BODY_MAX)
		return TC_ACT_SHOT;
	KC_BOUND(n, 1, KC_BODY_MAX);
	if (bpf_skb_store_bytes(skb, at, a->body, n, 0))
		return TC_ACT_SHOT;
	/* Unrolled: each entry at a constant offset.  As a loop, Debian 6.1's
	 * verifier without CAP_PERFMON walked clang's pointer through the arrays
	 * past the value's end, or past 64 iterations, and refused the program. */
#pragma clang loop unroll(full)
	for (int i = 0; i < KC_TTLS; i++) {
		/* no break: with one, clang sees a runtime trip count and keeps the loop */
		if (i < ttl_count) {
			__u32 ttl = a->ttl[i];
			__u32 v = ttl > age ? ttl - (__u32)age : 0;
			__u32 left = bpf_htonl(v);
			__u32 off = a->ttl_off[i];
			if (bpf_skb_store_bytes(skb, at + off, &left, 4, 0))
				return TC_ACT_SHOT;
			__u32 part = fold((v >> 16) + (v & 0xffff));
			ttl_sum += ((qlen + off) & 1) ? rot8(part) : part;
		}
	}
	if (bpf_skb_store_bytes(skb, DNS_AT + 2, counts, sizeof(counts), 0))
		return TC_ACT_SHOT;
	if (bpf_skb_pull_data(skb, DNS_AT + new_dns))
		return TC_ACT_SHOT;

	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	eth = data;
	ip = data + L2;
	udp = data + L2 + L3;
	if ((void *)(udp + 1) > end)
		return TC_ACT_SHOT;
	__u8 mac[ETH_ALEN];
	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);

	__u32 daddr = ip->daddr;
	ip->daddr = ip->saddr;
	ip->saddr = daddr;
	ip->tot_len = bpf_htons(L3 + L4 + new_dns);
	ip->id = 0;
	ip->frag_off = bpf_htons(0x4000);   /* DF, as Linux sends a UDP answer */
	ip->ttl = 64;
	ip->tos = 0;
	ip->check = 0;
	__u64 sum = 0;
	__u16 *w = (__u16 *)ip;
#pragma unroll
	for (int i = 0; i < L3 / 2; i++)
		sum += w[i];
	ip->check = ~fold(sum);

	__u16 sport = udp->source;
	udp->source = udp->dest;
	udp->dest = sport;
	udp->len = bpf_htons(L4 + new_dns);
	/* The UDP checksum from its parts, in big-endian words: the pseudo
	 * header and UDP header, the DNS header, the question (summed while it
	 * was read), the stored records and OPT (TTLs at zero, summed by the
	 * server), the TTLs as sent.  Bytes at an odd offset count as their
	 * word's low half: a part that starts there counts rotated by 8 bits. */
	sum = qsum;
	sum += bpf_ntohs(ip->saddr & 0xffff) + bpf_ntohs(ip->saddr >> 16) +
	       bpf_ntohs(ip->daddr & 0xffff) + bpf_ntohs(ip->daddr >> 16) + IPPROTO_UDP +
	       2 * (L4 + new_dns) + bpf_ntohs(udp->source) + bpf_ntohs(udp->dest);
	sum += qid + bpf_ntohs(rflags) + 1 + an + ns + ar_out;
	__u32 odd = qlen & 1;
	__u64 records = fold(body_sum);
	sum += odd ? rot8(records) : records;
	sum += ttl_sum;
	udp->check = 0;
	__u16 check = ~fold(sum);
	udp->check = bpf_htons(check ? check : 0xffff);

	__u64 *hits = bpf_map_lookup_elem(&kc_client_hits, &saddr);
	if (hits) {
		*hits += 1;
	} else {
		__u64 one = 1;
		bpf_map_update_elem(&kc_client_hits, &saddr, &one, BPF_NOEXIST);
	}
	hits = bpf_map_lookup_elem(&kc_name_hits, key);
	if (hits) {
		*hits += 1;
	} else {
		__u64 one = 1;
		bpf_map_update_elem(&kc_name_hits, key, &one, BPF_NOEXIST);
	}
	count(KC_HITS, 0);
	return bpf_redirect(skb->ifindex, 0);
}

char LICENSE[] SEC("license") = "GPL";
