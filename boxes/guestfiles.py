"""What vbox writes into every box it builds: systemd units and small scripts through
which a machine receives what vbox gives it (its identity on a Xen seed disk, the synced
folders and static addresses its kernel command line names), and settings that make a
box small and quiet. path in the box -> (content, mode)."""

from __future__ import annotations

ROOT_LABEL = "vbox-root"

# Files written into every box. The machine's own SSH host keys are written by vbox when
# the machine is made; this drop-in only makes sshd start on a box used without vbox.
FILES = {
    "etc/systemd/network/80-vbox.network": (
        # UseDomains: the project network's domain becomes the search domain (`ping db`);
        # UseHostname=no: the machine keeps the name vbox gives it (systemd.hostname=), and
        # networkd does not start hostnamed at every boot to set DHCP's (3 s of a TCG boot)
        "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n\n[DHCPv4]\nUseDomains=yes\nUseHostname=no\n",
        0o644,
    ),
    # sshd starts with no program run before it: a machine's host key comes from vbox, and
    # the condition below is systemd's own check (Debian's `sshd -t` and a shell for the
    # key test were two programs on the way to SSH at every boot; sshd checks its
    # configuration itself and says what is wrong in the journal)
    "etc/systemd/system/ssh.service.d/vbox-host-keys.conf": ("[Service]\nExecStartPre=\n", 0o644),
    "etc/systemd/system/vbox-host-keys.service": (
        "[Unit]\nDescription=vbox: SSH host keys for a machine that has none (a box used without vbox)\n"
        "ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key\nBefore=ssh.service\n\n"
        "[Service]\nType=oneshot\nExecStart=/usr/bin/ssh-keygen -A\n\n"
        "[Install]\nWantedBy=ssh.service\n",
        0o644,
    ),
    "etc/ssh/sshd_config.d/vbox.conf": (
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        "UseDNS no\n",
        0o644,
    ),
    # x-systemd.growfs: a VM's root file system grows to its (larger) disk at boot;
    # noinit_itable: without it ext4 zeroes the new inode tables after growing, about
    # 100 MB of writes into a fresh machine's overlay; noatime: reads write nothing
    "etc/fstab": (f"LABEL={ROOT_LABEL} / ext4 defaults,noatime,noinit_itable,errors=remount-ro,x-systemd.growfs 0 1\n",
                  0o644),
    # a volatile journal: a persistent one preallocates 8 MB and more in every machine
    "etc/systemd/journald.conf.d/vbox.conf": ("[Journal]\nStorage=volatile\nRuntimeMaxUse=16M\n", 0o644),
    # names come from the project network's DNS, not from multicast guesses
    "etc/systemd/resolved.conf.d/vbox.conf": ("[Resolve]\nLLMNR=no\nMulticastDNS=no\n", 0o644),
    # a VM vbox makes resolves through /etc/resolv.conf (providers/guest.py, static_resolver):
    # resolved, before sysinit.target, was 3.5 s of every TCG boot's way to sshd. A box
    # booted without that word (by its own bootloader, elsewhere) keeps resolved.
    "etc/systemd/system/systemd-resolved.service.d/vbox.conf": (
        "[Unit]\nConditionKernelCommandLine=!vbox.resolver=static\n", 0o644),
    # resolved's own tmpfiles line would put its link back at every boot, before (and instead
    # of) the one in the machine's credential; the disk keeps that link for a box booted alone
    "etc/tmpfiles.d/systemd-resolve.conf": (
        "# vbox: /etc/resolv.conf stays as it is; a machine vbox makes links it to its own (vbox.resolver=static)\n",
        0o644),
    # Xen guests have no SMBIOS strings: vbox gives them the same tmpfiles lines as KVM's
    # credential on a small raw disk that starts with "# vbox-seed " (see providers/xen.py)
    "etc/systemd/system/vbox-seed.service": (
        "[Unit]\nDescription=vbox: the machine's identity from its seed disk (Xen guests)\n"
        "ConditionVirtualization=xen\nDefaultDependencies=no\n"
        "After=local-fs.target\nBefore=ssh.service systemd-user-sessions.service sysinit.target\n\n"
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/usr/local/lib/vbox/seed\n\n"
        "[Install]\nWantedBy=sysinit.target\n",
        0o644,
    ),
    "usr/local/lib/vbox/seed": (
        "#!/bin/sh\n"
        "# Apply the seed disk vbox gives a Xen guest (its SSH host key, the authorized key).\n"
        "# Its block device may come a moment after boot: look for up to 10 s.\n"
        "set -u\n"
        "i=0\n"
        "while [ $i -lt 100 ]; do\n"
        "  for dev in /sys/block/xvd* /sys/block/vd* /sys/block/sd*; do\n"
        "    [ -e \"$dev\" ] || continue\n"
        "    node=/dev/${dev##*/}\n"
        "    if [ \"$(head -c 12 \"$node\" 2>/dev/null)\" = \"# vbox-seed \" ]; then\n"
        "      head -c 1048576 \"$node\" | tr -d '\\000' > /run/vbox-seed.conf\n"
        "      systemd-tmpfiles --create /run/vbox-seed.conf; rc=$?\n"
        "      rm -f /run/vbox-seed.conf\n"
        "      exit $rc\n"
        "    fi\n"
        "  done\n"
        "  i=$((i + 1)); sleep 0.1\n"
        "done\n"
        "echo 'vbox-seed: no seed disk' >&2\n",
        0o755,
    ),
    # KVM machines' synced folders: virtiofs tags named on the kernel command line
    # (providers/virtiofs.py), mounted before sshd starts, so `up` finds them there
    "etc/systemd/system/vbox-folders.service": (
        "[Unit]\nDescription=vbox: the synced folders named on the kernel command line (virtiofs)\n"
        "ConditionKernelCommandLine=vbox.folder\nDefaultDependencies=no\n"
        "After=local-fs.target\nBefore=ssh.service systemd-user-sessions.service sysinit.target\n\n"
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/usr/local/lib/vbox/folders\n\n"
        "[Install]\nWantedBy=sysinit.target\n",
        0o644,
    ),
    "usr/local/lib/vbox/folders": (
        "#!/bin/sh\n"
        "# Mount each vbox.folder=TAG,MODE,PATH of the kernel command line (or of the arguments:\n"
        "# a machine started warm): a virtiofs TAG at PATH (escaped as systemd-escape --path\n"
        "# writes it), MODE ro or rw.\n"
        "set -uf\n"
        "rc=0\n"
        "words=\"$*\"; [ -n \"$words\" ] || words=$(cat /proc/cmdline)\n"
        "for word in $words; do\n"
        "  case \"$word\" in vbox.folder=*) ;; *) continue ;; esac\n"
        "  value=${word#vbox.folder=}\n"
        "  tag=${value%%,*}; rest=${value#*,}; mode=${rest%%,*}; escaped=${rest#*,}\n"
        "  case \"$tag\" in vbox[0-9]|vbox[0-9][0-9]) ;; *) echo \"vbox-folders: bad tag in $word\" >&2; rc=1; continue ;; esac\n"
        "  case \"$mode\" in ro|rw) ;; *) echo \"vbox-folders: bad mode in $word\" >&2; rc=1; continue ;; esac\n"
        "  path=$(systemd-escape --unescape --path -- \"$escaped\") || { rc=1; continue; }\n"
        "  mountpoint -q -- \"$path\" && continue\n"
        "  mkdir -p -- \"$path\" && mount -t virtiofs -o \"$mode\" -- \"$tag\" \"$path\" || rc=1\n"
        "done\n"
        "exit $rc\n",
        0o755,
    ),
    # KVM machines' static addresses on extra networks (vbox.net=MAC,ADDRESS/PREFIX on the
    # kernel command line, providers/kvm.py), handed to networkd before it starts
    "etc/systemd/system/vbox-network.service": (
        "[Unit]\nDescription=vbox: static addresses named on the kernel command line\n"
        "ConditionKernelCommandLine=vbox.net\nDefaultDependencies=no\n"
        "Before=systemd-networkd.service network-pre.target\nWants=network-pre.target\n\n"
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/usr/local/lib/vbox/network\n\n"
        "[Install]\nWantedBy=sysinit.target\n",
        0o644,
    ),
    "usr/local/lib/vbox/network": (
        "#!/bin/sh\n"
        "# For each vbox.net=MAC,ADDRESS/PREFIX of the kernel command line: networkd gives the\n"
        "# interface with that MAC that address (a .network file in /run, before /etc's DHCP one).\n"
        "set -uf\n"
        "n=0\n"
        "mkdir -p /run/systemd/network\n"
        "for word in $(cat /proc/cmdline); do\n"
        "  case \"$word\" in vbox.net=*) ;; *) continue ;; esac\n"
        "  value=${word#vbox.net=}; mac=${value%%,*}; address=${value#*,}\n"
        "  echo \"$mac\" | grep -Eqx '([0-9a-f]{2}:){5}[0-9a-f]{2}' || { echo \"vbox-network: bad MAC in $word\" >&2; continue; }\n"
        "  echo \"$address\" | grep -Eqx '[0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9]{1,2}' || { echo \"vbox-network: bad address in $word\" >&2; continue; }\n"
        "  n=$((n + 1))\n"
        "  printf '[Match]\\nMACAddress=%s\\n\\n[Network]\\nAddress=%s\\n' \"$mac\" \"$address\" > /run/systemd/network/11-vbox-net$n.network\n"
        "done\n",
        0o755,
    ),
    # A KVM machine started from a memory image of its box booted once (providers/kvm_warm.py)
    # gets its identity there, on a virtio port: that boot waits here, before its network
    # and sshd, until the host sends it (the image is saved while it waits)
    "etc/systemd/system/vbox-identity.service": (
        "[Unit]\nDescription=vbox: the machine's identity from its host, on a virtio port (a warm start)\n"
        "ConditionKernelCommandLine=vbox.identity=channel\nDefaultDependencies=no\n"
        "After=basic.target\n"
        "Before=systemd-networkd.service network-pre.target ssh.service vbox-host-keys.service "
        "systemd-user-sessions.service\nWants=network-pre.target\n\n"
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nTimeoutStartSec=infinity\n"
        "ExecStart=/usr/local/lib/vbox/identity\n\n"
        "[Install]\nWantedBy=sysinit.target\n",
        0o644,
    ),
    "usr/local/lib/vbox/identity": (
        "#!/bin/sh\n"
        "# Say on the virtio port org.vbox.identity that this boot waits; read what the host\n"
        "# sends (a line each: time EPOCH, mac OLD NEW, machine-id HEX, random BASE64,\n"
        "# tmpfiles BASE64, folder TAG,MODE,PATH for each synced folder, end), apply it,\n"
        "# answer ok or the error.\n"
        "set -u\n"
        "modprobe -q virtio_console || :  # not left to udev's coldplug, slow on a busy host\n"
        "port=; i=0\n"
        "while [ -z \"$port\" ] && [ $i -lt 6000 ]; do  # its device comes with udev's coldplug: 10 min\n"
        "  for name in /sys/class/virtio-ports/*/name; do\n"
        "    [ -r \"$name\" ] && [ \"$(cat \"$name\")\" = org.vbox.identity ] || continue\n"
        "    dir=${name%/name}; port=/dev/${dir##*/}\n"
        "  done\n"
        "  [ -n \"$port\" ] && [ -c \"$port\" ] || { port=; i=$((i + 1)); sleep 0.1; }\n"
        "done\n"
        "[ -n \"$port\" ] || { echo 'vbox-identity: no virtio port org.vbox.identity' > /dev/console; exit 1; }\n"
        "exec 3<>\"$port\"\n"
        "# what of the boot does not wait for this is done first, so that the image holds it\n"
        "udevadm settle --timeout=60 || :\n"
        "i=0\n"
        "while [ $i -lt 600 ] && systemctl list-jobs --no-legend 2>/dev/null |\n"
        "    awk '$4 == \"running\" && $2 != \"vbox-identity.service\" { busy = 1 } END { exit !busy }'; do\n"
        "  i=$((i + 1)); sleep 0.1\n"
        "done\n"
        "# a port whose host is not connected reads as its end, and what is written to it is\n"
        "# lost: say so again until the host's lines come\n"
        "failed=; got=\n"
        "while [ -z \"$got\" ]; do\n"
        "  echo waiting >&3 2>/dev/null || :\n"
        "  while IFS=' ' read -r key value rest <&3; do\n"
        "    case \"$key\" in\n"
        "      time) echo \"$value\" | grep -Eqx '[0-9]+' && date -u -s \"@$value\" >/dev/null || failed=\"$failed time\" ;;\n"
        "      mac)\n"
        "        echo \"$value $rest\" | grep -Eqx '([0-9a-f]{2}:){5}[0-9a-f]{2} ([0-9a-f]{2}:){5}[0-9a-f]{2}' || { failed=\"$failed mac\"; continue; }\n"
        "        for dev in /sys/class/net/*; do\n"
        "          [ \"$(cat \"$dev/address\")\" = \"$value\" ] && { ip link set dev \"${dev##*/}\" address \"$rest\" || failed=\"$failed mac\"; }\n"
        "        done ;;\n"
        "      machine-id) echo \"$value\" | grep -Eqx '[0-9a-f]{32}' && echo \"$value\" > /etc/machine-id || failed=\"$failed machine-id\" ;;\n"
        "      random) printf '%s' \"$value\" | base64 -d > /dev/urandom || failed=\"$failed random\" ;;\n"
        "      tmpfiles)\n"
        "        (umask 077; printf '%s' \"$value\" | base64 -d > /run/vbox-identity.conf) &&\n"
        "          systemd-tmpfiles --create /run/vbox-identity.conf || failed=\"$failed tmpfiles\"\n"
        "        rm -f /run/vbox-identity.conf ;;\n"
        "      folder)  # TAG,MODE,PATH: its device was just plugged in, and may take a moment\n"
        "        n=0\n"
        "        until /usr/local/lib/vbox/folders \"vbox.folder=$value\" 2>/dev/null; do\n"
        "          n=$((n + 1)); [ $n -lt 100 ] || { failed=\"$failed folder\"; break; }; sleep 0.1\n"
        "        done ;;\n"
        "      end) got=1; break ;;\n"
        "      \"\") ;;\n"
        "      *) failed=\"$failed $key\" ;;\n"
        "    esac\n"
        "  done\n"
        "  [ -n \"$got\" ] || sleep 0.05\n"
        "done\n"
        "if [ -n \"$failed\" ]; then echo \"error:$failed\" >&3; exit 1; fi\n"
        "echo ok >&3\n",
        0o755,
    ),
    "etc/hostname": ("debian\n", 0o644),
    "etc/hosts": ("127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n::1\tlocalhost ip6-localhost ip6-loopback\n", 0o644),
}
# A libvirt host box (a recipe's `libvirt_host`): what libvirtd needs to run QEMU guests in
# an LXC machine as well as in a VM.
LIBVIRT_HOST_FILES = {
    # LXC's device rules let a container use the TUN device (its guests' network ports)
    # but make no node of it; in a VM the kernel's devtmpfs has it already
    "etc/systemd/system/vbox-tun.service": (
        "[Unit]\nDescription=vbox: /dev/net/tun for libvirt's guests (a container has no node of it)\n"
        "ConditionPathExists=!/dev/net/tun\nDefaultDependencies=no\nBefore=sysinit.target libvirtd.service\n\n"
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/mkdir -p /dev/net\n"
        "ExecStart=/bin/mknod -m 0666 /dev/net/tun c 10 200\n\n"
        "[Install]\nWantedBy=sysinit.target\n",
        0o644,
    ),
}
LIBVIRT_HOST_SERVICES = ("vbox-tun",)
SERVICES = ("systemd-networkd", "systemd-resolved", "ssh", "vbox-host-keys", "vbox-seed", "vbox-folders",
            "vbox-network", "vbox-identity")
# Units that do nothing in a machine, masked: each is a program at every boot, which under
# TCG is seconds of the only vCPU (benchmarks/lifecycle.py --provider kvm). e2scrub_reap
# looks for LVM snapshots (there is no LVM); pstore and its EFI module: there is no EFI
# (direct kernel boot); the DRM module logind asks for: there is no display; the loop and
# device-mapper modules load by themselves when their device is first opened. The
# calendar timers (package lists, dpkg's backup, fstrim) would run at once in a machine
# started warm, whose clock jumps from the image's time to now, and apt's lock would then
# meet the machine's own provisioning steps; a machine made for a project does not need them.
MASKED = ("e2scrub_reap.service", "e2scrub_all.timer", "systemd-pstore.service", "modprobe@efi_pstore.service",
          "modprobe@drm.service", "modprobe@dm_mod.service", "modprobe@loop.service",
          "apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "fstrim.timer")
