# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_hmac_file_server_global_optspecs
    string join \n config= check-config V/version h/help
end

function __fish_hmac_file_server_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_hmac_file_server_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_hmac_file_server_using_subcommand
    set -l cmd (__fish_hmac_file_server_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c hmac-file-server -n "__fish_hmac_file_server_needs_command" -l config -d 'Configuration file (TOML). `-config PATH` works too, as with the Go server' -r -F
complete -c hmac-file-server -n "__fish_hmac_file_server_needs_command" -l check-config -d 'Validate the configuration and StoreDir, print the result and exit'
complete -c hmac-file-server -n "__fish_hmac_file_server_needs_command" -s V -l version -d 'Print the version and the I/O driver this machine would run on (io_uring, or the epoll fallback), and exit'
complete -c hmac-file-server -n "__fish_hmac_file_server_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c hmac-file-server -n "__fish_hmac_file_server_needs_command" -f -a "sign" -d 'Print a signed PUT URL, as an XMPP server would hand it to a client; with `--proto bearer`, the URL and the `Authorization` header of a Prosody mod_http_file_share slot'
complete -c hmac-file-server -n "__fish_hmac_file_server_needs_command" -f -a "files" -d 'The stored files: statistics, listing, removal, purges. Works against a running server (through its control socket) or, when none runs, on the store directly'
complete -c hmac-file-server -n "__fish_hmac_file_server_needs_command" -f -a "completions" -d 'Print a shell completion script (the Debian package installs bash\'s, zsh\'s and fish\'s)'
complete -c hmac-file-server -n "__fish_hmac_file_server_needs_command" -f -a "man" -d 'Print the manual page hmac-file-server(1) in roff, as `man -l -` reads it; with `--dir`, write it and one page per subcommand (hmac-file-server-sign(1), ...) there'
complete -c hmac-file-server -n "__fish_hmac_file_server_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand sign" -l path -d 'Path below the upload prefix, not percent-encoded (e.g. "uuid/photo 1.jpg"). For bearer, "slot/filename"' -r
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand sign" -l size -d 'Exact size of the upload in bytes' -r
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand sign" -l type -d 'Content-Type the client will send (v2 and token sign it). Default: what an absent header means, application/octet-stream' -r
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand sign" -l proto -r -f -a "v\t''
v2\t''
token\t''
bearer\t'A Bearer token, as Prosody\'s mod_http_file_share issues them'"
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand sign" -l base-url -d 'Base URL the server is reached at; default http://127.0.0.1:<port>' -r
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand sign" -l sub -d 'bearer: the uploader\'s bare JID (the token\'s `sub`)' -r
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand sign" -l valid -d 'bearer: how long the token may be used, e.g. "300s" or "10m"' -r
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand sign" -l expires-in -d 'bearer: when the file is to be deleted, from now (the token\'s `expires`), e.g. "7d"' -r
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand sign" -l config -d 'Configuration file (TOML). `-config PATH` works too, as with the Go server' -r -F
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand sign" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand files; and not __fish_seen_subcommand_from stats list rm purge help" -l config -d 'Configuration file (TOML). `-config PATH` works too, as with the Go server' -r -F
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand files; and not __fish_seen_subcommand_from stats list rm purge help" -s h -l help -d 'Print help'
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand files; and not __fish_seen_subcommand_from stats list rm purge help" -f -a "stats" -d 'Files and bytes stored, in all and per uploader'
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand files; and not __fish_seen_subcommand_from stats list rm purge help" -f -a "list" -d 'Stored files, oldest first: upload time, size, uploader, expiry, path'
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand files; and not __fish_seen_subcommand_from stats list rm purge help" -f -a "rm" -d 'Delete files, by store path (below UploadSubDir, not percent-encoded) or URL'
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand files; and not __fish_seen_subcommand_from stats list rm purge help" -f -a "purge" -d 'Delete every file of an uploader (an account deletion, a privacy request) or older than a duration'
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand files; and not __fish_seen_subcommand_from stats list rm purge help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand files; and __fish_seen_subcommand_from stats" -l config -d 'Configuration file (TOML). `-config PATH` works too, as with the Go server' -r -F
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand files; and __fish_seen_subcommand_from stats" -s h -l help -d 'Print help'
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand files; and __fish_seen_subcommand_from list" -l user -d 'Only this uploader\'s files (a bare JID, or UploaderFromPath\'s segment)' -r
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand files; and __fish_seen_subcommand_from list" -l older-than -d 'Only files uploaded longer ago than this, e.g. "30d"' -r
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand files; and __fish_seen_subcommand_from list" -l config -d 'Configuration file (TOML). `-config PATH` works too, as with the Go server' -r -F
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand files; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand files; and __fish_seen_subcommand_from rm" -l config -d 'Configuration file (TOML). `-config PATH` works too, as with the Go server' -r -F
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand files; and __fish_seen_subcommand_from rm" -s h -l help -d 'Print help'
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand files; and __fish_seen_subcommand_from purge" -l user -r
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand files; and __fish_seen_subcommand_from purge" -l older-than -r
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand files; and __fish_seen_subcommand_from purge" -l config -d 'Configuration file (TOML). `-config PATH` works too, as with the Go server' -r -F
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand files; and __fish_seen_subcommand_from purge" -s h -l help -d 'Print help'
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand files; and __fish_seen_subcommand_from help" -f -a "stats" -d 'Files and bytes stored, in all and per uploader'
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand files; and __fish_seen_subcommand_from help" -f -a "list" -d 'Stored files, oldest first: upload time, size, uploader, expiry, path'
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand files; and __fish_seen_subcommand_from help" -f -a "rm" -d 'Delete files, by store path (below UploadSubDir, not percent-encoded) or URL'
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand files; and __fish_seen_subcommand_from help" -f -a "purge" -d 'Delete every file of an uploader (an account deletion, a privacy request) or older than a duration'
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand files; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand completions" -l config -d 'Configuration file (TOML). `-config PATH` works too, as with the Go server' -r -F
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand completions" -s h -l help -d 'Print help'
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand man" -l dir -r -f -a "(__fish_complete_directories)"
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand man" -l config -d 'Configuration file (TOML). `-config PATH` works too, as with the Go server' -r -F
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand man" -s h -l help -d 'Print help'
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand help; and not __fish_seen_subcommand_from sign files completions man help" -f -a "sign" -d 'Print a signed PUT URL, as an XMPP server would hand it to a client; with `--proto bearer`, the URL and the `Authorization` header of a Prosody mod_http_file_share slot'
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand help; and not __fish_seen_subcommand_from sign files completions man help" -f -a "files" -d 'The stored files: statistics, listing, removal, purges. Works against a running server (through its control socket) or, when none runs, on the store directly'
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand help; and not __fish_seen_subcommand_from sign files completions man help" -f -a "completions" -d 'Print a shell completion script (the Debian package installs bash\'s, zsh\'s and fish\'s)'
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand help; and not __fish_seen_subcommand_from sign files completions man help" -f -a "man" -d 'Print the manual page hmac-file-server(1) in roff, as `man -l -` reads it; with `--dir`, write it and one page per subcommand (hmac-file-server-sign(1), ...) there'
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand help; and not __fish_seen_subcommand_from sign files completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand help; and __fish_seen_subcommand_from files" -f -a "stats" -d 'Files and bytes stored, in all and per uploader'
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand help; and __fish_seen_subcommand_from files" -f -a "list" -d 'Stored files, oldest first: upload time, size, uploader, expiry, path'
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand help; and __fish_seen_subcommand_from files" -f -a "rm" -d 'Delete files, by store path (below UploadSubDir, not percent-encoded) or URL'
complete -c hmac-file-server -n "__fish_hmac_file_server_using_subcommand help; and __fish_seen_subcommand_from files" -f -a "purge" -d 'Delete every file of an uploader (an account deletion, a privacy request) or older than a duration'
