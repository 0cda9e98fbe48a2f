# SPDX-License-Identifier: Apache-2.0
# bash completion for vtpmctl (installed as
# share/bash-completion/completions/vtpmctl; works without bash-completion
# too: source it).  Commands and options are read from vtpmctl's own
# --help, so they cannot drift from the binary; values are completed for
# the TPM extra specs and image properties, --virt-type, --connect, the
# RPC methods of "call" and file names (--config, --console-log, --verify).

# The options of "vtpmctl CMD --help": sets _vtpmctl_opts (all) and
# _vtpmctl_argopts (those taking a value).
_vtpmctl_options() {
    local prog=$1 cmd=$2 line o
    _vtpmctl_opts=()
    _vtpmctl_argopts=()
    while IFS= read -r line; do
        [[ $line =~ ^\ +(-[A-Za-z],\ )?(--[a-z][a-z0-9-]*)(=)? ]] || continue
        o=${BASH_REMATCH[1]%, }
        [[ -n $o ]] && _vtpmctl_opts+=("$o")
        _vtpmctl_opts+=("${BASH_REMATCH[2]}")
        if [[ -n ${BASH_REMATCH[3]} ]]; then
            [[ -n $o ]] && _vtpmctl_argopts+=("$o")
            _vtpmctl_argopts+=("${BASH_REMATCH[2]}")
        fi
    done < <("$prog" "$cmd" --help 2>/dev/null)
}

# KEY=VALUE of a flavor extra spec (flavor) or an image property (image).
_vtpmctl_kv() {
    local kind=$1 cur=$2 keys
    local traits='trait:COMPUTE_SECURITY_TPM_1_2= trait:COMPUTE_SECURITY_TPM_2_0='
    if [[ $cur != *=* ]]; then
        if [[ $kind == flavor ]]; then
            keys="hw:tpm_version= hw:tpm_model= hw:tpm_secret_security= hw:tpm_pcr_banks= $traits"
        else
            keys="hw_tpm_version= hw_tpm_model= hw_tpm_pcr_banks= $traits"
        fi
        compgen -W "$keys" -- "$cur"
        return
    fi
    local key=${cur%%=*} vals
    case $key in
        hw:tpm_version | hw_tpm_version) vals='1.2 2.0' ;;
        hw:tpm_model | hw_tpm_model) vals='tpm-tis tpm-crb' ;;
        hw:tpm_secret_security) vals='user host deployment' ;;
        hw:tpm_pcr_banks | hw_tpm_pcr_banks) vals='sha1 sha256 sha384 sha512 sha256,sha384' ;;
        trait:COMPUTE_SECURITY_TPM_*) vals='required forbidden' ;;
        *) return ;;
    esac
    compgen -W "$vals" -P "$key=" -- "${cur#*=}"
}

_vtpmctl() {
    local line=${COMP_LINE:0:COMP_POINT} cur= prev cmd prog n
    local -a words reply=()
    read -r -a words <<< "$line"
    # The word under the cursor, whole (bash splits it at ':' and '=').
    if [[ $line != *[[:space:]] && ${#words[@]} -gt 0 ]]; then
        cur=${words[-1]}
        unset 'words[-1]'
    fi
    n=${#words[@]}
    prog=${words[0]:-vtpmctl}
    [[ $prog == */* && -x $prog ]] || prog=vtpmctl
    prev=${words[n - 1]:-}
    cmd=${words[1]:-}

    if ((n <= 1)); then
        mapfile -t reply < <(compgen -W "resolve capabilities render-xml call identity help --help" -- "$cur")
    else
        local _vtpmctl_opts _vtpmctl_argopts opt= val= vpre=
        _vtpmctl_options "$prog" "$cmd"
        if [[ $cur == --*=* ]]; then
            opt=${cur%%=*}
            val=${cur#*=}
            vpre="$opt="
        elif [[ " ${_vtpmctl_argopts[*]} " == *" $prev "* ]]; then
            opt=$prev
            val=$cur
        fi
        if [[ -n $opt ]]; then
            case $opt in
                -f | --flavor-spec) mapfile -t reply < <(_vtpmctl_kv flavor "$val") ;;
                -i | --image-prop) mapfile -t reply < <(_vtpmctl_kv image "$val") ;;
                --virt-type) mapfile -t reply < <(compgen -W "qemu kvm" -- "$val") ;;
                --connect | -c)
                    mapfile -t reply < <(compgen -W "qemu:///system qemu:///session test:///default" -- "$val") ;;
                --config | --console-log | --verify) mapfile -t reply < <(compgen -f -- "$val") ;;
            esac
            reply=("${reply[@]/#/$vpre}")
        elif [[ $cur == -* ]]; then
            mapfile -t reply < <(compgen -W "${_vtpmctl_opts[*]}" -- "$cur")
        elif [[ $cmd == call ]]; then
            # METHOD is the first word after "call" that is neither an
            # option nor an option's value.
            local i have_method=
            for ((i = 2; i < n; i++)); do
                if [[ ${words[i]} == -* ]]; then
                    [[ ${words[i]} != *=* && " ${_vtpmctl_argopts[*]} " == *" ${words[i]} "* ]] && ((i++))
                else
                    have_method=1
                fi
            done
            [[ -n $have_method ]] ||
                mapfile -t reply < <(compgen -W "get_capabilities spawn destroy power_off power_on
                    migrate_disk_and_power_off finish_migration confirm_migration
                    finish_revert_migration shelve unshelve rebuild rekey evacuate
                    get_vtpm_identity" -- "$cur")
        fi
    fi

    # bash replaces only the part after the last word-break character.
    local wb=${COMP_WORDBREAKS-$' \t\n"\'><=;|&(:'} i pre=
    for ((i = ${#cur} - 1; i >= 0; i--)); do
        if [[ $wb == *"${cur:i:1}"* ]]; then
            pre=${cur:0:i+1}
            break
        fi
    done
    COMPREPLY=("${reply[@]#"$pre"}")
}
complete -F _vtpmctl vtpmctl
